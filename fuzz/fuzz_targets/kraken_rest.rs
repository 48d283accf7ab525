#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| lido_fuzz::kraken_rest(data));
