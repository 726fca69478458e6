//! A network namespace handed over as a file descriptor (SCM_RIGHTS) on the API's unix socket.
//!
//! The plugin sends the descriptor with the first bytes of its HTTP request. The daemon *peeks*
//! at the first byte of every connection with a control buffer: the kernel gives the receiver a
//! duplicate of the descriptor and leaves the bytes queued, so the ordinary request reader runs
//! unchanged. A descriptor that no endpoint asks for is closed when the connection ends.
use std::{
    io,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd},
};

/// Control buffer for one descriptor (CMSG_SPACE(sizeof(int)) is 24 on 64-bit Linux).
const CMSG_BUF: usize = 64;

/// Write `data` on a connected unix stream, with `fd` attached to its first bytes.
pub fn send_with_fd(sock: &std::os::unix::net::UnixStream, data: &[u8], fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
    use std::io::Write;
    let Some(fd) = fd else {
        return (&*sock).write_all(data);
    };
    let mut cbuf = [0u8; CMSG_BUF];
    let mut iov = libc::iovec { iov_base: data.as_ptr() as *mut libc::c_void, iov_len: data.len() };
    // SAFETY: msghdr is plain data; every pointer below points into live locals of this frame.
    let sent = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd.as_raw_fd());
        libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL)
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    (&*sock).write_all(&data[sent as usize..])
}

/// Peek at the first byte queued on `fd` (non-blocking); `Ok(Some(fd))` when a descriptor came
/// with it. `WouldBlock` when nothing is queued yet.
fn peek_once(fd: RawFd) -> io::Result<Option<OwnedFd>> {
    let mut byte = [0u8; 1];
    let mut cbuf = [0u8; CMSG_BUF];
    let mut iov = libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: 1 };
    // SAFETY: as in send_with_fd; the kernel writes at most msg_controllen bytes of cbuf.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = cbuf.len() as _;
        let n = libc::recvmsg(fd, &mut msg, libc::MSG_PEEK | libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut out = None;
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                let count = ((*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / std::mem::size_of::<RawFd>();
                for i in 0..count {
                    let raw = std::ptr::read_unaligned(data.add(i));
                    // Keep the first; close any extra the peer sent.
                    let owned = OwnedFd::from_raw_fd(raw);
                    if out.is_none() {
                        out = Some(owned);
                    }
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        Ok(out)
    }
}

/// The descriptor sent with the first bytes of this connection, if any (waits until the first
/// bytes arrive; `None` also when the peer closes without sending).
pub async fn peek_fd(s: &tokio::net::UnixStream) -> io::Result<Option<OwnedFd>> {
    loop {
        s.readable().await?;
        match s.try_io(tokio::io::Interest::READABLE, || peek_once(s.as_raw_fd())) {
            Ok(fd) => return Ok(fd),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[tokio::test]
    async fn a_descriptor_travels_with_the_first_bytes_and_the_bytes_stay() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let f = std::fs::File::open("/proc/self/ns/net").unwrap();
        let want = nix::sys::stat::fstat(&f).unwrap().st_ino;
        let b = tokio::net::UnixStream::from_std({
            b.set_nonblocking(true).unwrap();
            b
        })
        .unwrap();
        use std::os::fd::AsFd;
        send_with_fd(&a, b"POST /cni/add HTTP/1.1\r\n", Some(f.as_fd())).unwrap();
        let got = peek_fd(&b).await.unwrap().expect("a descriptor");
        assert_eq!(nix::sys::stat::fstat(&got).unwrap().st_ino, want, "the same namespace");
        // The request bytes are all still there for the reader.
        let mut b = b.into_std().unwrap();
        b.set_nonblocking(false).unwrap();
        drop(a);
        let mut s = String::new();
        b.read_to_string(&mut s).unwrap();
        assert_eq!(s, "POST /cni/add HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn plain_connections_have_none() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        let b = tokio::net::UnixStream::from_std(b).unwrap();
        send_with_fd(&a, b"GET /_ping HTTP/1.1\r\n\r\n", None).unwrap();
        assert!(peek_fd(&b).await.unwrap().is_none());
        drop(a);
        let (_a2, b2) = std::os::unix::net::UnixStream::pair().unwrap();
        drop(_a2);
        b2.set_nonblocking(true).unwrap();
        let b2 = tokio::net::UnixStream::from_std(b2).unwrap();
        assert!(peek_fd(&b2).await.unwrap().is_none(), "closed without data");
    }
}
