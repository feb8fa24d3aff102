//! Where output goes: data to stdout, everything else to stderr; JSON
//! diagnostics to stdout, one per line. The only module that prints.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::{IsTerminal, Write};

use crate::cli::OutputFormat;
use crate::diagnostic::Diagnostic;
use crate::diagnostic::render::{self, Format};

/// Output policy for one invocation.
#[derive(Debug, Clone, Copy)]
pub struct Printer {
    format: Format,
    quiet: bool,
    /// Progress bars: on a terminal, in human format, not quiet or verbose.
    progress: bool,
}

impl Printer {
    /// Picks the format: explicit, else GitHub annotations inside GitHub
    /// Actions, else human text (coloured on a terminal unless `NO_COLOR`).
    pub fn new(format: Option<OutputFormat>, quiet: bool, verbose: u8) -> Self {
        let format = match format {
            Some(OutputFormat::Json) => Format::Json,
            Some(OutputFormat::Github) => Format::Github,
            Some(OutputFormat::Human) => Format::Human { color: color_enabled() },
            None if std::env::var_os("GITHUB_ACTIONS").is_some() => Format::Github,
            None => Format::Human { color: color_enabled() },
        };
        let progress =
            !quiet && verbose == 0 && matches!(format, Format::Human { .. }) && std::io::stderr().is_terminal();
        Printer { format, quiet, progress }
    }

    /// A progress line for `total` nodes, drawn only where it helps.
    pub fn progress(&self, total: usize) -> Progress {
        let bar = self.progress.then(|| {
            let bar = indicatif::ProgressBar::new(total as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{spinner} [{pos}/{len}] {elapsed} {wide_msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            bar
        });
        Progress { bar, quiet: self.quiet }
    }

    /// Prints one diagnostic (warnings are hidden by `--quiet`).
    pub fn diagnostic(&self, diag: &Diagnostic) {
        if self.quiet && !diag.is_error() {
            return;
        }
        let text = render::render(diag, self.format);
        if self.format == Format::Json {
            let _ = std::io::stdout().lock().write_all(text.as_bytes());
        } else {
            let _ = std::io::stderr().lock().write_all(text.as_bytes());
        }
    }

    /// Prints every diagnostic, warnings first.
    pub fn diagnostics<'a>(&self, diags: impl IntoIterator<Item = &'a Diagnostic>) {
        let mut all: Vec<&Diagnostic> = diags.into_iter().collect();
        all.sort_by_key(|d| d.is_error());
        for d in all {
            self.diagnostic(d);
        }
    }

    /// A status line on stderr (hidden by `--quiet`).
    pub fn status(&self, line: &str) {
        if !self.quiet {
            eprintln!("{line}");
        }
    }

    /// An error summary line on stderr (never hidden).
    pub fn error_summary(&self, line: &str) {
        eprintln!("error: {line}");
    }

    /// Data on stdout.
    pub fn data(&self, line: &str) -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        out.write_all(line.as_bytes())?;
        out.write_all(b"\n")
    }

    /// True when diagnostics go out as JSON.
    pub fn is_json(&self) -> bool {
        self.format == Format::Json
    }
}

fn color_enabled() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stderr().is_terminal()
}

/// Progress of a run: a bar on a terminal, plain status lines elsewhere.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    quiet: bool,
}

impl Progress {
    /// A line above the bar (or on stderr without one).
    pub fn line(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None if !self.quiet => eprintln!("{text}"),
            None => {}
        }
    }

    /// The bar's message: what is running, rows so far.
    pub fn message(&self, text: String) {
        if let Some(bar) = &self.bar {
            bar.set_message(text);
        }
    }

    /// One more node done.
    pub fn advance(&self) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
    }

    /// The bar itself, for a task that updates its message.
    pub fn handle(&self) -> Option<indicatif::ProgressBar> {
        self.bar.clone()
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
