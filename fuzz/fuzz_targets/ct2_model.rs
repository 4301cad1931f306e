#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = voxwire::fuzzing::ct2_model(data);
});
