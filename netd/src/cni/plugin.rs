//! `netd-cni`: one exec = one CNI operation. Reads `CNI_*` and stdin, asks the daemon, prints the
//! result (or the error object) on stdout, logs on stderr, exits 0 on success and 1 on error.
use std::{
    io::{Read, Write},
    os::{fd::AsFd, unix::net::UnixStream},
    path::PathBuf,
    process::ExitCode,
    time::Duration,
};

use serde_json::Value;

use super::{
    fdpass,
    spec::{self, CniError, Command, Env, NetConf, code},
    wire,
};

/// The daemon's default socket (`<exec-root>/netd.sock` with the default exec-root).
pub const DEFAULT_SOCKET: &str = "/run/netd/netd.sock";
/// Bound on one request to the daemon (an ADD under load takes well under a second).
const TIMEOUT: Duration = Duration::from_secs(120);
/// Largest stdin accepted.
const MAX_STDIN: u64 = 1 << 20;

pub fn main() -> ExitCode {
    let mut stdin = Vec::new();
    let read = std::io::stdin().take(MAX_STDIN).read_to_end(&mut stdin);
    let version = spec::peek_version(&stdin)
        .filter(|v| spec::SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| spec::PLUGIN_VERSION.to_string());
    let out = match read {
        Err(e) => Err(CniError::new(code::IO, format!("reading stdin: {e}"))),
        Ok(_) => run(&|k| std::env::var(k).ok(), &stdin),
    };
    let mut stdout = std::io::stdout().lock();
    match out {
        Ok(Some(v)) => {
            let _ = writeln!(stdout, "{v}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("netd-cni: {e}");
            let _ = writeln!(stdout, "{}", e.to_json(&version));
            ExitCode::from(1)
        }
    }
}

/// One invocation: the output JSON (none for DEL, CHECK, STATUS, GC), or the error.
pub fn run(get: &dyn Fn(&str) -> Option<String>, stdin: &[u8]) -> Result<Option<Value>, CniError> {
    let env = spec::parse_env(get)?;
    if env.command == Command::Version {
        return Ok(Some(spec::version_result()));
    }
    let conf = spec::parse_conf(stdin, env.command)?;
    let socket = match &conf.socket {
        Some(s) => spec::socket_path(s)?,
        None => match get("NETD_HOST").filter(|h| !h.is_empty()) {
            Some(h) => spec::socket_path(&h)
                .map_err(|_| CniError::new(code::INVALID_ENV, format!("invalid NETD_HOST {h:?}: want unix:///path")))?,
            None => PathBuf::from(DEFAULT_SOCKET),
        },
    };
    let d = Daemon { socket };
    match env.command {
        Command::Add => add(&d, &env, &conf).map(Some),
        Command::Del => {
            let req = wire::DelRequest { owner: owner(&env, &conf) };
            d.call("/cni/del", &req, None)?;
            Ok(None)
        }
        Command::Check => check(&d, &env, &conf).map(|_| None),
        Command::Status => {
            d.call_raw("GET", "/_ping", b"", None)?;
            Ok(None)
        }
        Command::Gc => {
            let req = wire::GcRequest {
                config_name: conf.name.clone(),
                valid: conf.valid_attachments.iter().cloned().collect(),
            };
            let out = d.call("/cni/gc", &req, None)?;
            if let Ok(r) = serde_json::from_slice::<wire::GcResponse>(&out) {
                for o in r.removed {
                    eprintln!("netd-cni: GC removed the attachment of {} ({})", o.container_id, o.ifname);
                }
            }
            Ok(None)
        }
        Command::Version => unreachable!("answered above"),
    }
}

fn owner(env: &Env, conf: &NetConf) -> wire::CniOwner {
    wire::CniOwner {
        container_id: env.container_id.clone(),
        ifname: env.ifname.clone(),
        config_name: conf.name.clone(),
    }
}

fn open_netns(path: &str) -> Result<std::fs::File, CniError> {
    std::fs::File::open(path)
        .map_err(|e| CniError::new(code::UNKNOWN_CONTAINER, format!("failed to open netns {path:?}: {e}")))
}

fn add(d: &Daemon, env: &Env, conf: &NetConf) -> Result<Value, CniError> {
    let ns = open_netns(&env.netns)?;
    let rc = &conf.runtime;
    // Capability args first, then the older CNI_ARGS forms.
    let ip = match (rc.ip, env.arg("IP")) {
        (Some(ip), _) => Some(ip),
        (None, Some(s)) => Some(spec::parse_static_ip(s, None)?),
        (None, None) => None,
    };
    let mac = match (&rc.mac, env.arg("MAC")) {
        (Some(m), _) => Some(m.clone()),
        (None, Some(m)) => {
            crate::ipam::parse_mac(m)
                .map_err(|e| CniError::new(code::INVALID_ENV, format!("invalid MAC in CNI_ARGS: {e}")))?;
            Some(m.to_string())
        }
        (None, None) => None,
    };
    let mut names = rc.aliases.clone();
    if let Some(n) = env.arg("K8S_POD_NAME").filter(|n| !n.is_empty() && !names.iter().any(|a| a == n)) {
        names.insert(0, n.to_string());
    }
    let req = wire::AddRequest {
        owner: owner(env, conf),
        netns_path: env.netns.clone(),
        network: conf.network.clone(),
        create: conf.create.clone(),
        port_mappings: rc.port_mappings.clone(),
        ip: ip.map(|i| i.to_string()),
        ip6: rc.ip6.map(|i| i.to_string()),
        mac,
        names,
    };
    let out = d.call("/cni/add", &req, Some(&ns))?;
    let r: wire::AddResponse = serde_json::from_slice(&out)
        .map_err(|e| CniError::new(code::DECODE, format!("decoding the daemon's answer: {e}")))?;
    Ok(spec::add_result(&conf.cni_version, &r, conf.prev_result.as_ref()))
}

fn check(d: &Daemon, env: &Env, conf: &NetConf) -> Result<(), CniError> {
    let prev =
        conf.prev_result.as_ref().ok_or_else(|| CniError::new(code::INVALID_CONFIG, "required prevResult missing"))?;
    let address = spec::prev_address(prev, &env.ifname);
    let address6 = spec::prev_address6(prev, &env.ifname);
    if address.is_none() && address6.is_none() {
        return Err(CniError::new(
            code::CHECK_FAILED,
            format!("prevResult has no address on a sandbox interface named {:?}", env.ifname),
        ));
    }
    let ns = open_netns(&env.netns)?;
    let req = wire::CheckRequest { owner: owner(env, conf), network: conf.network.clone(), address, address6 };
    d.call("/cni/check", &req, Some(&ns))?;
    Ok(())
}

/// The daemon at its API socket (blocking; one request per connection).
struct Daemon {
    socket: PathBuf,
}

impl Daemon {
    fn call(&self, path: &str, body: &impl serde::Serialize, ns: Option<&std::fs::File>) -> Result<Vec<u8>, CniError> {
        let body = serde_json::to_vec(body).expect("serializable request");
        self.call_raw("POST", path, &body, ns)
    }

    fn call_raw(&self, method: &str, path: &str, body: &[u8], ns: Option<&std::fs::File>) -> Result<Vec<u8>, CniError> {
        let unreachable = || {
            CniError::new(
                code::NOT_AVAILABLE,
                format!(
                    "Cannot connect to the netd daemon at unix://{}. Is the daemon running?",
                    self.socket.display()
                ),
            )
        };
        let s = UnixStream::connect(&self.socket).map_err(|_| unreachable())?;
        let io = |e: std::io::Error| CniError::new(code::IO, format!("talking to the netd daemon: {e}"));
        s.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
        s.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: netd\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        fdpass::send_with_fd(&s, &req, ns.map(|f| f.as_fd())).map_err(io)?;
        let mut resp = Vec::new();
        (&s).take(16 << 20).read_to_end(&mut resp).map_err(io)?;
        parse_response(&resp)
    }
}

/// Status and body of the daemon's answer; errors carry the daemon's CNI code when it gave one.
fn parse_response(resp: &[u8]) -> Result<Vec<u8>, CniError> {
    let split = resp.windows(4).position(|w| w == b"\r\n\r\n");
    let Some(split) = split else {
        return Err(CniError::new(code::IO, "talking to the netd daemon: incomplete answer"));
    };
    let head = String::from_utf8_lossy(&resp[..split]);
    let body = resp[split + 4..].to_vec();
    let status: u16 = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    if (200..300).contains(&status) {
        return Ok(body);
    }
    let (message, cni_code) = match serde_json::from_slice::<wire::ErrorBody>(&body) {
        Ok(e) => (e.message, e.cni_code),
        Err(_) => (String::from_utf8_lossy(&body).into_owned(), None),
    };
    let code = cni_code.unwrap_or(match status {
        400 => code::INVALID_CONFIG,
        404 => code::UNKNOWN_CONTAINER,
        409 => code::ATTACHMENT_EXISTS,
        _ => code::INTERNAL,
    });
    Err(CniError::new(code, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemon_answers_map_to_cni_errors() {
        let ok = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}").unwrap();
        assert_eq!(ok, b"{}");
        let e = parse_response(
            b"HTTP/1.1 409 Conflict\r\n\r\n{\"message\":\"Bind for 0.0.0.0:8080 failed: port is already allocated\",\"cni_code\":100}",
        )
        .unwrap_err();
        assert_eq!((e.code, e.msg.as_str()), (100, "Bind for 0.0.0.0:8080 failed: port is already allocated"));
        let e = parse_response(b"HTTP/1.1 400 Bad Request\r\n\r\n{\"message\":\"bad\"}").unwrap_err();
        assert_eq!(e.code, 7);
        assert_eq!(parse_response(b"HTTP/1.1 500 x\r\n").unwrap_err().code, 5);
    }

    #[test]
    fn version_and_unreachable_daemon() {
        let env = |cmd: &'static str| {
            move |k: &str| match k {
                "CNI_COMMAND" => Some(cmd.to_string()),
                _ => None,
            }
        };
        let v = run(&env("VERSION"), b"").unwrap().unwrap();
        assert_eq!(v["supportedVersions"].as_array().unwrap().len(), 4);
        let conf = br#"{"cniVersion":"1.1.0","name":"n","type":"netd-cni","socket":"/nonexistent/netd.sock"}"#;
        let e = run(&env("STATUS"), conf).unwrap_err();
        assert_eq!(e.code, 50);
        assert_eq!(e.msg, "Cannot connect to the netd daemon at unix:///nonexistent/netd.sock. Is the daemon running?");
    }
}
