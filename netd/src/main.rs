//! `netd`: the daemon (`netd up`) and its CLI. This file only parses and dispatches.
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use netd::cli::{
    self,
    args::{Cli, Cmd, DebugCmd},
};

fn main() -> ExitCode {
    // `netd shim CONFIG` (the supervisor, when no `netd-shim` is installed next to netd): one
    // start per sandbox, so without building the CLI's parser.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.len() == 3 && args[1] == "shim" {
        netd::shim::main(std::path::Path::new(&args[2]));
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => return usage_error(e),
    };
    match cli.cmd {
        Cmd::Completion { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "netd", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Cmd::Debug(DebugCmd::Man { dir }) => report(netd::cli::man::write_all(&dir)),
        // The supervisor must stay single-threaded until it forks: no runtime.
        Cmd::Shim { config } => netd::shim::main(&config),
        Cmd::Debug(DebugCmd::EbpfObject { verifier_log, bpf_log }) => {
            report(netd::debug::ebpf_object(verifier_log, bpf_log))
        }
        Cmd::Up(up) => {
            netd::daemon::tune_allocator();
            netd::logging::init(up.log_level.directive());
            let socket = match cli::args::socket_path(cli.host.as_deref(), &up.exec_root) {
                Ok(s) => s,
                Err(e) => return report(Err(anyhow::anyhow!(e))),
            };
            let cfg = match netd::daemon::config_from_args(*up, socket) {
                Ok(c) => c,
                Err(e) => return report(Err(anyhow::anyhow!(e))),
            };
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
            report(rt.block_on(netd::daemon::reconcile::up(cfg)).map_err(anyhow::Error::from))
        }
        cmd => {
            let socket = match cli::client_socket(cli.host.as_deref()) {
                Ok(s) => s,
                Err(f) => return fail(f),
            };
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
            match rt.block_on(cli::run_client(socket, cmd)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(f) => fail(f),
            }
        }
    }
}

/// Help and version go to stdout with exit 0; any other parse error is a usage error, which
/// Docker's CLI reports with exit code 125 (clap's default is 2).
fn usage_error(e: clap::Error) -> ExitCode {
    let _ = e.print();
    match e.kind() {
        clap::error::ErrorKind::DisplayHelp
        | clap::error::ErrorKind::DisplayVersion
        | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => ExitCode::SUCCESS,
        _ => ExitCode::from(125),
    }
}

fn fail(f: cli::Failure) -> ExitCode {
    if !f.message.is_empty() {
        eprintln!("{}", f.message);
    }
    ExitCode::from(f.code)
}

fn report(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::from(1)
        }
    }
}
