#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| btfs_host::fuzz_bodies::hub_serve(data));
