//! Tools built on the library rather than parts of a node: [`devnet`](mod@devnet) runs a
//! complete local network as child processes (`btfs devnet`), [`bench`](mod@bench) measures
//! transfers over one (`btfs bench`).

pub mod bench;
pub mod devnet;
