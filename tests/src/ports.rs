use std::net::TcpListener;

/// Below the kernel's ephemeral range (32768–60999 here): a port the
/// kernel hands out for `:0` is also the source port of outgoing
/// connections, so with many processes connecting (loads, polls, etcd) it
/// could be taken by a connection before the server meant for it binds.
const RANGE: std::ops::Range<u16> = 10_000..32_768;

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> anyhow::Result<u16> {
    for _ in 0..200 {
        let port = fastrand::u16(RANGE);
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
            return Ok(l.local_addr()?.port());
        }
    }
    // Crowded: let the kernel choose.
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
