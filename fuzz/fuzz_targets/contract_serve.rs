#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| btfs_host::fuzz_bodies::contract_serve(data));
