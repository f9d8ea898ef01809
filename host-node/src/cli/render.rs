//! Output rendering of the `btfs` binary: progress bars, human-readable sizes, and errors as
//! JSON (`--json`) with a machine-readable kind.

use std::io::IsTerminal;

use btfs_host::tenant::{shard_client, TransferError};
use indicatif::{ProgressBar, ProgressStyle};

/// A progress bar on stderr, hidden when stderr is not a terminal.
pub fn progress_bar(label: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(label.to_string());
    bar
}

/// `{"error": {"kind", "message", "causes", "details"?}}` on stdout: `message` is the outermost
/// error, `causes` the chain below it, each once.
pub fn print_json_error(
    kind: &str,
    message: &str,
    causes: &[String],
    details: Option<serde_json::Value>,
) {
    let mut error = serde_json::json!({
        "kind": kind,
        "message": message,
        "causes": causes,
    });
    if let Some(d) = details {
        error["details"] = d;
    }
    let doc = serde_json::json!({ "error": error });
    println!(
        "{}",
        serde_json::to_string_pretty(&doc).unwrap_or_else(|_| doc.to_string())
    );
}

/// A machine-readable name for the error: the first typed error in the chain that has one.
pub fn error_kind(e: &anyhow::Error) -> &'static str {
    for c in e.chain() {
        if let Some(t) = c.downcast_ref::<TransferError>() {
            return t.kind();
        }
        if c.is::<btfs_host::tenant::network_file::NetworkFileError>() {
            return "network_file";
        }
        if c.is::<btfs_core::link::LinkError>() {
            return "bad_link";
        }
        if c.is::<btfs_host::services::hub::client::HubClientError>() {
            return "hub";
        }
        if c.is::<btfs_host::services::status::StatusError>() {
            return "status";
        }
        if c.is::<shard_client::ShardError>() {
            return "shard";
        }
        if c.is::<btfs_host::tenant::output::OutputError>() {
            return "output";
        }
    }
    "error"
}

/// `b` bytes in binary units with one decimal (`1.5 GiB`).
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}
