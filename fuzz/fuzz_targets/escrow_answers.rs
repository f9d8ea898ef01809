#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| btfs_core::fuzz_bodies::escrow_answers(data));
