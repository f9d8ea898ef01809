//! Tools built on the library rather than parts of a node: [`devnet`](mod@devnet) runs a
//! complete local network as child processes (`btfs devnet`), [`bench`](mod@bench) measures
//! transfers over one (`btfs bench`), [`netns`] makes each of its nodes a separate machine in
//! its own network namespace (`btfs devnet --netns`).

pub mod bench;
pub mod devnet;
pub mod netns;
