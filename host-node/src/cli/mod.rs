//! The `btfs` binary's command line: [`args`] (clap definitions and their checks), [`connect`]
//! (the tenant a command works through), [`inspect`] (`shard`, `hosts`, `status`) and
//! [`render`] (progress bars, sizes, JSON errors). `main.rs` parses and dispatches; the work is
//! in the `btfs_host` library.

pub mod args;
pub mod connect;
pub mod inspect;
pub mod money;
pub mod render;
