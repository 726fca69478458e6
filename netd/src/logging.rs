//! Structured logs (tracing) to stderr. Colour only when stderr is a terminal (and `NO_COLOR` is
//! unset): under systemd, a pipe or a file the log is plain text.
use std::io::IsTerminal;

pub fn init(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(use_colour(std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR").is_some()))
        .try_init();
}

/// Colour belongs on a terminal only, and never when the user set `NO_COLOR` (no-color.org).
fn use_colour(terminal: bool, no_color: bool) -> bool {
    terminal && !no_color
}

#[cfg(test)]
mod tests {
    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(super::use_colour(true, false));
        assert!(!super::use_colour(false, false));
        assert!(!super::use_colour(true, true));
    }
}
