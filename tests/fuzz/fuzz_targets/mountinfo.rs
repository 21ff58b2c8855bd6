//! `ovltrace::sys::mounts::parse_mountinfo` on arbitrary bytes: /proc/self/mountinfo
//! carries paths chosen by whoever can mount (container runtimes, users in
//! their own namespaces), escaped by the kernel but otherwise arbitrary.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ovltrace::sys::mounts;

fuzz_target!(|data: &[u8]| {
    let parsed = mounts::parse_mountinfo(data);
    for m in &parsed.mounts {
        // What the resolvers and the reports do with a mount.
        let _ = (m.dev.to_kernel(), m.dev.to_string());
        let _ = mounts::path_display(&m.mountpoint);
        for l in m.lowerdirs.iter().chain(&m.datadirs) {
            let _ = mounts::path_display(l);
        }
        let _ = serde_json::to_string(m);
    }
    for w in &parsed.warnings {
        let _ = w.to_string();
    }
});
