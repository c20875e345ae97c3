//! A stranger holding idle connections on a link port: one address holds
//! a few of the port's slots, never all of them, and idle handshakes from
//! however many addresses yield to a newcomer, so a configured neighbour
//! still links.

use std::net::{Ipv4Addr, SocketAddr};

use carrier::domain::MessageId;
use carrier::protocol::link::LinkMessage;
use tokio::net::{TcpSocket, TcpStream};

use super::devices::{fetch_some, lookup_shows, with_devices};
use super::edges::{announce_dave, relay};
use super::{beside_a_hostile_neighbour, link_as, next_link_message, send_link};
use crate::common::{CAROL, DAVE};
use crate::devices::client::{look_up, seal, start_session};

/// More idle connections than the link port has slots in all.
const IDLE: usize = 80;

#[tokio::test]
async fn idle_connections_from_one_address_leave_room_for_a_neighbour() {
    let (nodes, neighbour) = beside_a_hostile_neighbour().await;
    let port = nodes[0].link_addr;
    let mut idle = Vec::new();
    for _ in 0..IDLE {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let queued = socket
            .connect(port)
            .await
            .expect("the connection is queued");
        idle.push(queued);
    }
    // The neighbour dials from 127.0.0.1, after every idle connection is
    // queued: the server takes them in the order they came.
    let mut link = link_as(&neighbour, &nodes[0]).await;
    send_link(&mut link, &LinkMessage::Ping).await;
    next_link_message(&mut link, "the pong on the neighbour's link", |m| {
        matches!(m, LinkMessage::Pong).then_some(())
    })
    .await;
    drop(idle);
}

/// Addresses the stranger holds, each with the most link handshakes one
/// address may have open (4): more connections than the port's 64 slots.
const ADDRESSES: u8 = 20;
const PER_ADDRESS: u8 = 4;

/// Queues idle connections to `port` from 127.0.0.2 onwards, taking turns
/// between the addresses.
async fn from_many_addresses(port: SocketAddr) -> Vec<TcpStream> {
    let mut idle = Vec::new();
    for _ in 0..PER_ADDRESS {
        for host in 2..2 + ADDRESSES {
            let socket = TcpSocket::new_v4().unwrap();
            let source = SocketAddr::from((Ipv4Addr::new(127, 0, 0, host), 0));
            socket.bind(source).unwrap();
            idle.push(
                socket
                    .connect(port)
                    .await
                    .expect("the connection is queued"),
            );
        }
    }
    idle
}

/// Every slot of the link port held by idle handshakes from 20 addresses:
/// the neighbour's connection closes the oldest of them and links, and
/// what it relays is delivered.
#[tokio::test]
async fn idle_handshakes_from_many_addresses_yield_to_a_neighbour() {
    // neighbour (Dave's home, played here) - victim (Carol's home).
    let (nodes, neighbour) = beside_a_hostile_neighbour().await;
    let (carol, _, mut carols) = with_devices(&nodes[0], CAROL, 1).await;
    let idle = from_many_addresses(nodes[0].link_addr).await;
    // Dialled after every idle connection is queued, so the server takes
    // it last, with every slot already taken.
    let mut link = link_as(&neighbour, &nodes[0]).await;

    let dave1 = announce_dave(&mut link, &neighbour).await;
    let (_, conn) = carols.remove(0);
    lookup_shows(&conn, DAVE, 1, 1).await;
    let carol_peer = look_up(&conn, CAROL, &carol.identity()).await;
    let id = MessageId::random();
    let mut session = start_session(&dave1, &carol_peer, 1, None);
    let envelope = seal(&dave1, &mut session, id, "through the crowd");
    let origin = neighbour.fingerprint().to_hex();
    send_link(
        &mut link,
        &LinkMessage::Relay(relay(&dave1, CAROL, 1, id, envelope, origin)),
    )
    .await;
    let got = fetch_some(&conn).await;
    assert_eq!(got.iter().map(|m| m.id).collect::<Vec<_>>(), [id]);
    drop(idle);
}
