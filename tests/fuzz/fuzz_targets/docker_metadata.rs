//! The parsers of Docker's on-disk metadata on arbitrary bytes: daemon.json,
//! config.v2.json, image configs, repositories.json, layer link targets and
//! the one-line layerdb files can all be planted by someone who controls an
//! image or the Docker root (see `ovltrace::catalog::runtimes::docker::fuzz_parsers`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ovltrace::catalog::runtimes::docker::fuzz_parsers(data);
});
