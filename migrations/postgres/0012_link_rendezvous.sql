-- Link codes' rendezvous, shared by the members of a cluster: the device
-- that shows a code may be connected to one member and the new device to
-- another. A row lives from `link_open` until the link is answered or the
-- rendezvous expires (10 minutes); the request and the answer are sealed
-- bytes the server cannot read. Members wake each other with
-- notifications; the bytes travel here, since a sealed request can be
-- larger than a notification.
CREATE TABLE link_rendezvous (
    id          BYTEA PRIMARY KEY,
    phone       TEXT NOT NULL,
    expires_at  BIGINT NOT NULL,
    -- The new device's sealed request, once one asked (through any member).
    request     BYTEA,
    -- Whether the opening device answered, and its sealed answer (NULL
    -- with answered set: it refused).
    answered    BOOLEAN NOT NULL DEFAULT FALSE,
    response    BYTEA
);
CREATE INDEX link_rendezvous_by_phone ON link_rendezvous (phone);
