//! `ovltrace::bpf::event::decode` on arbitrary ring-buffer records, and what the
//! reports do with a decoded path (the names in it are chosen by containers).
//!
//! The first byte picks the mode: raw bytes as they are, or the rest laid
//! out as a copy-up event with a valid header, so that the fuzzer spends its
//! time on the path and flag fields rather than on finding the header.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ovltrace::{bpf::event, report, text};
use ovltrace_ebpf::{CopyUpEvent, EVENT_COPY_UP};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        let _ = event::decode(data);
        return;
    };
    let record: Vec<u8> = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        let size = size_of::<CopyUpEvent>();
        let mut r = rest.to_vec();
        r.resize(size, 0);
        r[0..4].copy_from_slice(&EVENT_COPY_UP.to_le_bytes());
        r[4..8].copy_from_slice(&(size as u32).to_le_bytes());
        r
    };
    if let Ok(ev) = event::decode(&record) {
        let _ = ev.bytes();
        let (text, b64) = report::path_fields(&ev.path);
        let _ = text::terminal(&text);
        let _ = text::terminal(&ev.comm.to_string());
        let _ = b64.map(|b| b.len());
    }
});
