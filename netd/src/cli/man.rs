//! Man pages generated from the CLI definition (clap_mangen): one page for `netd` and one per
//! subcommand (`netd-run.1`, `netd-network-create.1`, ...). `cargo xtask man` calls this through
//! the hidden `netd debug man DIR`.
use std::path::Path;

use anyhow::{Context, Result};
use clap::CommandFactory;

use super::args::Cli;

pub fn write_all(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut n = 0;
    write_tree(dir, Cli::command(), "netd", &mut n)?;
    eprintln!("wrote {n} man pages to {}", dir.display());
    Ok(())
}

fn write_tree(dir: &Path, cmd: clap::Command, name: &str, n: &mut usize) -> Result<()> {
    let cmd = cmd.name(name.to_string());
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_tree(dir, sub.clone(), &format!("{name}-{}", sub.get_name()), n)?;
    }
    let path = dir.join(format!("{name}.1"));
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut buf).with_context(|| format!("rendering {name}"))?;
    std::fs::write(&path, buf).with_context(|| format!("writing {}", path.display()))?;
    *n += 1;
    Ok(())
}
