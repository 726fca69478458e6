//! systemd's readiness protocol (`Type=notify`): one datagram to `$NOTIFY_SOCKET` per state
//! change (`READY=1` once the API serves, `STOPPING=1` when the teardown begins). Without the
//! variable (not started by systemd) nothing is sent.
use std::os::unix::{ffi::OsStrExt, net::UnixDatagram};

/// Send `state` (e.g. `READY=1`) to the service manager, if there is one; failures are logged.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return };
    if let Err(e) = send(path.as_bytes(), state) {
        tracing::warn!(socket = %path.to_string_lossy(), error = %e, "sd_notify {state}");
    }
}

fn send(path: &[u8], state: &str) -> std::io::Result<()> {
    use std::os::{linux::net::SocketAddrExt, unix::net::SocketAddr};
    let addr = match path.strip_prefix(b"@") {
        // An abstract socket name (systemd allows them; they are per network namespace).
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None => SocketAddr::from_pathname(std::ffi::OsStr::from_bytes(path))?,
    };
    UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn sends_one_datagram() {
        let dir = std::env::temp_dir().join(format!("netd-sdnotify-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let p = dir.join("notify.sock");
        let _ = std::fs::remove_file(&p);
        let rx = std::os::unix::net::UnixDatagram::bind(&p).unwrap();
        super::send(p.as_os_str().as_encoded_bytes(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
