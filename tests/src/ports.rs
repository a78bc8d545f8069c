//! Free TCP ports on the loopback interface.

use std::net::TcpListener;

/// Returns a TCP port on 127.0.0.1 that was free a moment ago.
///
/// The port is found by binding port 0 and dropping the listener, so another process may take it
/// before the caller binds it. Prefer binding port 0 directly where the program allows it.
pub fn free_port() -> u16 {
    free_ports::<1>()[0]
}

/// Returns `N` distinct TCP ports on 127.0.0.1 that were free a moment ago.
///
/// All listeners are held until every port is chosen, so the ports differ from each other.
pub fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    std::array::from_fn(|i| {
        listeners[i]
            .local_addr()
            .expect("local address of a bound listener")
            .port()
    })
}
