//! Command-line definitions (clap), Docker's names and defaults.
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::dataplane::Backend;

pub const DEFAULT_EXEC_ROOT: &str = "/run/netd";
pub const DEFAULT_DATA_ROOT: &str = "/var/lib/netd";
pub const DEFAULT_BPFFS: &str = "/sys/fs/bpf/netd";

#[derive(Parser, Debug)]
#[command(
    name = "netd",
    version,
    about = "Docker's single-host network model with an eBPF datapath",
    disable_help_subcommand = true
)]
pub struct Cli {
    /// Daemon socket to connect to (also NETD_HOST)
    #[arg(short = 'H', long = "host", global = true, env = "NETD_HOST")]
    pub host: Option<String>,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Run the daemon in the foreground (SIGTERM or `netd down` stops it)
    Up(Box<UpArgs>),
    /// Stop the daemon: stop every sandbox and remove everything netd created
    Down {
        /// Also when Docker containers are on netd networks (their interfaces go)
        #[arg(short = 'f', long = "force")]
        force: bool,
    },
    /// Create and run a new sandbox from a command
    Run(Box<RunArgs>),
    /// Create a new sandbox without starting it
    Create(Box<RunArgs>),
    /// Start one or more stopped sandboxes
    Start {
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Stop one or more running sandboxes
    Stop {
        /// Seconds to wait before killing the sandbox
        #[arg(short = 't', long = "time", alias = "timeout")]
        time: Option<i64>,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Restart one or more sandboxes
    Restart {
        #[arg(short = 't', long = "time", alias = "timeout")]
        time: Option<i64>,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Kill one or more running sandboxes
    Kill {
        #[arg(short = 's', long = "signal", default_value = "KILL")]
        signal: String,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Block until one or more sandboxes stop, then print their exit codes
    Wait {
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Remove one or more sandboxes
    Rm {
        /// Force the removal of a running sandbox
        #[arg(short = 'f', long = "force")]
        force: bool,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// List sandboxes
    Ps {
        /// Show all sandboxes (default shows just running)
        #[arg(short = 'a', long = "all")]
        all: bool,
        /// Only display sandbox IDs
        #[arg(short = 'q', long = "quiet")]
        quiet: bool,
        /// Don't truncate output
        #[arg(long = "no-trunc")]
        no_trunc: bool,
    },
    /// Fetch the logs of a sandbox
    Logs {
        #[arg(short = 'f', long = "follow")]
        follow: bool,
        container: String,
    },
    /// Return low-level information on sandboxes
    Inspect {
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Execute a command in a running sandbox
    Exec {
        #[arg(short = 'e', long = "env")]
        env: Vec<String>,
        #[arg(short = 'w', long = "workdir")]
        workdir: Option<String>,
        container: String,
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        cmd: Vec<String>,
    },
    /// List port mappings or a specific mapping for the sandbox
    Port {
        container: String,
        /// PRIVATE_PORT[/PROTO]
        port: Option<String>,
    },
    /// Display per-port and per-drop-reason dataplane counters
    Stats {
        #[arg(long = "format", value_enum, default_value_t = StatsFormat::Table)]
        format: StatsFormat,
    },
    /// Stream events (sandboxes, networks, published ports) as they happen, like `docker events`
    #[command(alias = "events")]
    Monitor {
        /// Only these events: `type=container|network|port`, `event=ACTION` (repeatable)
        #[arg(short = 'f', long = "filter")]
        filter: Vec<String>,
        /// Docker's text lines, or one JSON object per line
        #[arg(long = "format", value_enum, default_value_t = MonitorFormat::Text)]
        format: MonitorFormat,
        /// Same as `--format json`
        #[arg(long)]
        json: bool,
        /// The eBPF dataplane's events instead, like `cilium monitor`: dropped packets with
        /// their reason, traced packets (repeatable)
        #[arg(short = 't', long = "type", value_enum)]
        types: Vec<DpEventType>,
    },
    /// Manage networks
    #[command(subcommand)]
    Network(NetworkCmd),
    /// Display system-wide information
    Info,
    /// Show the netd version information
    Version,
    /// Print a shell completion script (e.g. `netd completion bash > /etc/bash_completion.d/netd`)
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// (internal) per-sandbox supervisor
    #[command(hide = true)]
    Shim { config: PathBuf },
    /// Developer tools
    #[command(hide = true, subcommand)]
    Debug(DebugCmd),
}

#[derive(Subcommand, Debug)]
pub enum DebugCmd {
    /// Print every program and map of the embedded eBPF object
    EbpfObject {
        /// Also load each program into the kernel (inside a throwaway network namespace) and
        /// print the verifier's processed instruction count
        #[arg(long)]
        verifier_log: bool,
        /// Load with the programs' debug log on (as `netd up --bpf-log`): the counts then
        /// include the log statements, which a normal load prunes
        #[arg(long)]
        bpf_log: bool,
    },
    /// Write one man page per command (netd.1, netd-run.1, ...) into DIR
    Man { dir: PathBuf },
}

/// `netd monitor --type`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DpEventType {
    /// Packets the programs dropped, with the reason
    Drop,
    /// Packets the per-packet programs passed or redirected
    Trace,
}

/// `netd monitor --format`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum MonitorFormat {
    Text,
    Json,
}

/// `netd stats --format`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatsFormat {
    Table,
    Json,
    Prometheus,
}

/// `netd up --iptables-backend` (dockerd's firewall backends for the iptables dataplane).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum IptablesBackend {
    Nft,
    Legacy,
}

impl IptablesBackend {
    pub fn as_str(self) -> &'static str {
        match self {
            IptablesBackend::Nft => "nft",
            IptablesBackend::Legacy => "legacy",
        }
    }
}

/// `netd up --log-level` (dockerd's levels; `fatal` logs errors only).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
    Fatal,
}

impl LogLevel {
    /// The `tracing` filter directive for this level.
    pub fn directive(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error | LogLevel::Fatal => "error",
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum NetworkCmd {
    /// Create a network
    Create {
        #[arg(short = 'd', long = "driver", default_value = "bridge")]
        driver: String,
        /// Subnet in CIDR format (repeatable: one IPv4 and, with --ipv6, one IPv6)
        #[arg(long)]
        subnet: Vec<String>,
        /// Gateway for a subnet (repeatable, one per family)
        #[arg(long)]
        gateway: Vec<String>,
        #[arg(long = "ip-range")]
        ip_range: Vec<String>,
        #[arg(long)]
        internal: bool,
        /// Enable IPv6 on the network (a ULA /64 of the default pools unless --subnet gives one)
        #[arg(long = "ipv6", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
        ipv6: bool,
        /// Enable IPv4 on the network (Docker 28's --ipv4=false makes an IPv6-only network)
        #[arg(long = "ipv4", default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
        ipv4: bool,
        #[arg(short = 'o', long = "opt")]
        opt: Vec<String>,
        name: String,
    },
    /// List networks
    #[command(alias = "list")]
    Ls {
        #[arg(short = 'q', long = "quiet")]
        quiet: bool,
        #[arg(long = "no-trunc")]
        no_trunc: bool,
    },
    /// Display detailed information on one or more networks
    Inspect {
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Remove one or more networks
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Connect a sandbox to a network
    Connect {
        #[arg(long = "alias")]
        alias: Vec<String>,
        #[arg(long = "ip")]
        ip: Option<String>,
        /// IPv6 address on a dual-stack network
        #[arg(long = "ip6")]
        ip6: Option<String>,
        /// Highest gw-priority provides the default gateway. Accepts positive and negative values.
        #[arg(long = "gw-priority", default_value_t = 0, allow_negative_numbers = true)]
        gw_priority: i64,
        network: String,
        container: String,
    },
    /// Disconnect a sandbox from a network
    Disconnect {
        #[arg(short = 'f', long = "force")]
        force: bool,
        network: String,
        container: String,
    },
    /// Remove all unused networks
    Prune {
        #[arg(short = 'f', long = "force")]
        force: bool,
    },
}

/// `netd run` / `netd create` flags (Docker's names; `-h` is the hostname, as in Docker).
#[derive(Args, Debug, Clone, Default)]
#[command(disable_help_flag = true)]
pub struct RunArgs {
    #[arg(long = "help", action = clap::ArgAction::Help)]
    pub help: Option<bool>,
    /// Run the sandbox in the background and print its ID
    #[arg(short = 'd', long = "detach")]
    pub detach: bool,
    /// Keep STDIN open
    #[arg(short = 'i', long = "interactive")]
    pub interactive: bool,
    /// Automatically remove the sandbox when it exits
    #[arg(long = "rm")]
    pub rm: bool,
    #[arg(long = "name")]
    pub name: Option<String>,
    /// Connect the sandbox to a network (bridge, host, none, container:NAME, or a user network;
    /// or Docker's long syntax: name=NET[,alias=A][,ip=IP][,ip6=IP][,mac-address=MAC][,gw-priority=N])
    #[arg(long = "network", alias = "net", default_value = "bridge")]
    pub network: String,
    /// Publish a sandbox's port(s) to the host
    #[arg(short = 'p', long = "publish")]
    pub publish: Vec<String>,
    /// Publish all exposed ports to random ports
    #[arg(short = 'P', long = "publish-all")]
    pub publish_all: bool,
    /// Expose a port or a range of ports
    #[arg(long = "expose")]
    pub expose: Vec<String>,
    #[arg(short = 'h', long = "hostname")]
    pub hostname: Option<String>,
    #[arg(long = "domainname")]
    pub domainname: Option<String>,
    #[arg(long = "dns")]
    pub dns: Vec<String>,
    #[arg(long = "dns-search")]
    pub dns_search: Vec<String>,
    #[arg(long = "dns-option", alias = "dns-opt")]
    pub dns_option: Vec<String>,
    /// Add a custom host-to-IP mapping (host:ip)
    #[arg(long = "add-host")]
    pub add_host: Vec<String>,
    /// Add link to another sandbox
    #[arg(long = "link")]
    pub link: Vec<String>,
    /// IPv4 address (e.g., 172.30.100.104)
    #[arg(long = "ip")]
    pub ip: Option<String>,
    /// IPv6 address (e.g., 2001:db8::33)
    #[arg(long = "ip6")]
    pub ip6: Option<String>,
    #[arg(long = "mac-address")]
    pub mac_address: Option<String>,
    #[arg(long = "network-alias", alias = "net-alias")]
    pub network_alias: Vec<String>,
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    #[arg(short = 'w', long = "workdir")]
    pub workdir: Option<String>,
    /// The command and its arguments (its first word may not look like a flag: an unknown
    /// flag is an error, as in Docker, not the command to run)
    #[arg(required = true, trailing_var_arg = true)]
    pub cmd: Vec<String>,
}

/// `netd up` flags (dockerd's names and defaults).
#[derive(Args, Debug, Clone)]
pub struct UpArgs {
    /// Bridge IP and subnet of the default bridge, e.g. 10.20.0.1/16
    #[arg(long = "bip")]
    pub bip: Option<String>,
    /// Allocate sandbox IPs of the default bridge from this subnet only
    #[arg(long = "fixed-cidr")]
    pub fixed_cidr: Option<String>,
    /// Enable IPv6 on the default bridge (a ULA /64 of the default pools unless --fixed-cidr-v6)
    #[arg(long = "ipv6", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub ipv6: bool,
    /// IPv6 subnet of the default bridge, e.g. fd00:1::/64 (with --ipv6)
    #[arg(long = "fixed-cidr-v6")]
    pub fixed_cidr_v6: Option<String>,
    /// ip6tables rules for IPv6 networks (iptables dataplane; Docker 27+'s default: true)
    #[arg(long = "ip6tables", default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub ip6tables: bool,
    /// MTU of the default bridge and its sandboxes
    #[arg(long = "mtu")]
    pub mtu: Option<u32>,
    /// Attach sandboxes to this existing bridge ("none" disables the default bridge)
    #[arg(short = 'b', long = "bridge")]
    pub bridge: Option<String>,
    /// Default host IP for published ports
    #[arg(long = "ip")]
    pub ip: Option<String>,
    /// Enable inter-container communication on the default bridge
    #[arg(long = "icc", default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub icc: bool,
    /// DNS server for sandboxes
    #[arg(long = "dns")]
    pub dns: Vec<String>,
    #[arg(long = "dns-search")]
    pub dns_search: Vec<String>,
    #[arg(long = "dns-opt")]
    pub dns_opt: Vec<String>,
    /// Enable net.ipv4.ip_forward in the daemon's namespace
    #[arg(long = "ip-forward", default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub ip_forward: bool,
    /// Use a userland proxy for loopback traffic (iptables dataplane)
    #[arg(long = "userland-proxy", default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub userland_proxy: bool,
    #[arg(long = "iptables-backend", value_enum, default_value_t = IptablesBackend::Nft)]
    pub iptables_backend: IptablesBackend,
    /// Default address pools for networks without a subnet (IPv4 and IPv6): base=CIDR,size=N
    #[arg(long = "default-address-pool")]
    pub default_address_pool: Vec<String>,
    /// Daemon configuration file (daemon.json keys)
    #[arg(long = "config-file")]
    pub config_file: Option<PathBuf>,
    #[arg(long = "dataplane", value_enum, default_value_t = Backend::Ebpf)]
    pub dataplane: Backend,
    /// XDP on the uplinks: auto (native, except tc-only on veth uplinks), native, generic, off
    #[arg(long = "xdp", value_enum, default_value_t = crate::dataplane::XdpChoice::Auto)]
    pub xdp: crate::dataplane::XdpChoice,
    /// cgroup v2 directory for the sock_addr programs (default: the cgroup2 root)
    #[arg(long = "cgroup")]
    pub cgroup: Option<PathBuf>,
    /// Parent cgroup of the sandboxes' cgroups, below --cgroup (Docker's --cgroup-parent)
    #[arg(long = "cgroup-parent", default_value = "netd")]
    pub cgroup_parent: String,
    /// Uplink interfaces (default: every interface but lo, bridges, their ports and sandbox veths, followed live)
    #[arg(long = "uplink")]
    pub uplink: Vec<String>,
    #[arg(long = "data-root", default_value = DEFAULT_DATA_ROOT)]
    pub data_root: PathBuf,
    #[arg(long = "exec-root", default_value = DEFAULT_EXEC_ROOT)]
    pub exec_root: PathBuf,
    #[arg(long = "bpffs", default_value = DEFAULT_BPFFS)]
    pub bpffs: PathBuf,
    /// Keep sandboxes and the dataplane running when the daemon stops
    #[arg(long = "live-restore")]
    pub live_restore: bool,
    /// The eBPF programs' debug log (aya-log) in the daemon's log: one line per dropped packet
    /// (program, reason, interface). Without it the log statements are pruned at load (no cost)
    #[arg(long = "bpf-log")]
    pub bpf_log: bool,
    #[arg(short = 'l', long = "log-level", value_enum, default_value_t = LogLevel::Info)]
    pub log_level: LogLevel,
    /// Serve Prometheus metrics on ADDR:PORT
    #[arg(long = "metrics-addr")]
    pub metrics_addr: Option<String>,
    /// Serve Docker's network plugin protocol on this unix socket ("none": do not); the socket's
    /// basename is the driver name (`docker network create -d netd`)
    #[arg(long = "docker-plugin", default_value = crate::daemon::docker_plugin::DEFAULT_SOCKET)]
    pub docker_plugin: String,
}

/// The daemon socket: `-H unix://PATH`, `NETD_HOST`, or `<exec-root>/netd.sock`.
pub fn socket_path(host: Option<&str>, exec_root: &std::path::Path) -> Result<PathBuf, String> {
    match host {
        None => Ok(exec_root.join("netd.sock")),
        Some(h) => match h.strip_prefix("unix://") {
            Some(p) if !p.is_empty() => Ok(PathBuf::from(p)),
            _ if h.starts_with('/') => Ok(PathBuf::from(h)),
            _ => Err(format!("invalid host {h:?}: netd listens on unix sockets only (unix:///path)")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_args_parse_like_docker() {
        let cli = Cli::try_parse_from([
            "netd",
            "run",
            "-d",
            "--name",
            "web",
            "-p",
            "8080:80",
            "-p",
            "53:53/udp",
            "--network",
            "host",
            "--",
            "python3",
            "-m",
            "http.server",
            "80",
        ])
        .unwrap();
        let Cmd::Run(r) = cli.cmd else { panic!() };
        assert!(r.detach);
        assert_eq!(r.name.as_deref(), Some("web"));
        assert_eq!(r.publish, ["8080:80", "53:53/udp"]);
        assert_eq!(r.network, "host");
        assert_eq!(r.cmd, ["python3", "-m", "http.server", "80"]);
        // Without `--`, the command's own flags still belong to the command.
        let cli = Cli::try_parse_from(["netd", "run", "--rm", "sh", "-c", "echo hi"]).unwrap();
        let Cmd::Run(r) = cli.cmd else { panic!() };
        assert_eq!(r.cmd, ["sh", "-c", "echo hi"]);
        assert!(r.rm);
        // An unknown flag is refused, not run as the command; after `--` anything goes.
        let e = Cli::try_parse_from(["netd", "run", "--restart", "always", "sh"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::UnknownArgument);
        let cli = Cli::try_parse_from(["netd", "run", "--", "--restart", "always"]).unwrap();
        let Cmd::Run(r) = cli.cmd else { panic!() };
        assert_eq!(r.cmd, ["--restart", "always"]);
    }

    #[test]
    fn up_bool_flags_take_docker_forms() {
        let cli = Cli::try_parse_from(["netd", "up", "--icc=false", "--userland-proxy=false"]).unwrap();
        let Cmd::Up(u) = cli.cmd else { panic!() };
        assert!(!u.icc);
        assert!(!u.userland_proxy);
        assert!(u.ip_forward);
        assert_eq!(u.dataplane, Backend::Ebpf);
    }

    #[test]
    fn socket_path_forms() {
        let er = std::path::Path::new("/run/x");
        assert_eq!(socket_path(None, er).unwrap(), PathBuf::from("/run/x/netd.sock"));
        assert_eq!(socket_path(Some("unix:///tmp/s.sock"), er).unwrap(), PathBuf::from("/tmp/s.sock"));
        assert!(socket_path(Some("tcp://1.2.3.4:2375"), er).is_err());
    }
}
