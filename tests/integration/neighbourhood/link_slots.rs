//! A stranger holding idle connections on a link port: one address holds
//! a few of the port's slots, never all of them, so a configured neighbour
//! dialling from an address of its own still links.

use carrier::protocol::link::LinkMessage;
use tokio::net::TcpSocket;

use super::{beside_a_hostile_neighbour, link_as, next_link_message, send_link};

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
