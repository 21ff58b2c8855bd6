//! `ovltrace doctor`: what this kernel supports and what `run` would do.
//! Every line is a check that was performed, not assumed.

use std::{fmt::Write as _, os::fd::AsFd as _, path::Path, process::ExitCode};

use anyhow::Result;
use aya::{programs::FEntry, Btf};

use crate::{
    bpf::probe::{self, FentryBtf, ProbeMode, COPY_UP_FN, LOOKUP_FN, OVERLAY_MODULE},
    cli::DoctorArgs,
    sys::btf::{KernelBtf, OVERLAY_BTF, VMLINUX_BTF},
    sys::module_btf,
    sys::privilege,
};

struct Out(String);

impl Out {
    fn line(&mut self, ok: Option<bool>, what: &str, detail: impl AsRef<str>) {
        let mark = match ok {
            Some(true) => "ok  ",
            Some(false) => "FAIL",
            None => "info",
        };
        let _ = writeln!(self.0, "[{mark}] {what:<22} {}", detail.as_ref());
    }
}

fn read_trim(p: &str) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

pub fn main(args: DoctorArgs) -> Result<ExitCode> {
    let mut o = Out(String::new());
    let root = system_lines(&mut o);
    let btf = KernelBtf::load();
    btf_lines(&mut o, &btf);
    let kallsyms = std::fs::read_to_string("/proc/kallsyms").unwrap_or_default();
    overlay_lines(&mut o, &btf, &kallsyms);
    plan_lines(&mut o, args.probe, &btf, &kallsyms);
    let verdict = attach_test(&mut o, root, args.probe);
    privilege_lines(&mut o);
    print!("{}", o.0);
    // The last line is the verdict, one line, for scripts and preflight
    // checks; the exit status says the same (0: run will work, 1: not).
    match verdict {
        Ok(()) => {
            println!("ovltrace run will work on this kernel.");
            Ok(ExitCode::SUCCESS)
        }
        Err(why) => {
            println!("{why}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Kernel release, root, lockdown and the JIT; whether this is root.
fn system_lines(o: &mut Out) -> bool {
    o.line(None, "kernel", crate::sys::kernel_release());
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    o.line(
        Some(root),
        "root",
        if root {
            "yes"
        } else {
            "no: loading programs needs root"
        },
    );

    let lockdown = read_trim("/sys/kernel/security/lockdown")
        .map(|s| {
            // The active mode is the bracketed one: "none [integrity] confidentiality".
            s.split_whitespace()
                .find(|w| w.starts_with('['))
                .map(|w| w.trim_matches(['[', ']']).to_string())
                .unwrap_or(s)
        })
        .unwrap_or_else(|| "unknown (securityfs not mounted)".into());
    o.line(None, "lockdown", &lockdown);
    if let Some(jit) = read_trim("/proc/sys/net/core/bpf_jit_enable") {
        o.line(
            None,
            "bpf jit",
            if jit == "0" {
                "off (programs run interpreted)"
            } else {
                "on"
            },
        );
    }

    root
}

/// vmlinux BTF, the struct offsets read from it, and overlay's types.
fn btf_lines(o: &mut Out, btf: &Result<KernelBtf>) {
    match btf {
        Ok(b) => {
            o.line(Some(true), "vmlinux BTF", VMLINUX_BTF);
            match b.offsets() {
                Ok(off) => o.line(
                    Some(true),
                    "struct offsets",
                    format!(
                        "dentry.d_parent={} d_name={} d_inode={} d_sb={} qstr.name={} \
                         super_block.s_dev={} inode.i_mode={} i_size={}",
                        off.dentry_d_parent,
                        off.dentry_d_name,
                        off.dentry_d_inode,
                        off.dentry_d_sb,
                        off.qstr_name,
                        off.sb_s_dev,
                        off.inode_i_mode,
                        off.inode_i_size
                    ),
                ),
                Err(e) => o.line(Some(false), "struct offsets", format!("{e:#}")),
            }
            overlay_types_line(o, b);
        }
        Err(e) => o.line(Some(false), "vmlinux BTF", format!("{e:#}")),
    }
}

/// Whether overlay is there (built in or a module) and its functions.
fn overlay_lines(o: &mut Out, btf: &Result<KernelBtf>, kallsyms: &str) {
    let builtin = btf.as_ref().is_ok_and(|b| b.vmlinux_has_func(LOOKUP_FN));
    let module_loaded = Path::new("/sys/module/overlay/initstate").exists();
    let overlay = if builtin {
        "built in (functions in vmlinux BTF)".to_string()
    } else if module_loaded {
        let btf = if Path::new(OVERLAY_BTF).exists() {
            format!("module BTF {OVERLAY_BTF}")
        } else {
            "no module BTF: data-copy time will not be measured".into()
        };
        format!("module, loaded; {btf}")
    } else if kallsyms.contains("[overlay]") {
        "module, loaded".into()
    } else {
        "not loaded (no overlay mounts yet?): `modprobe overlay`".into()
    };
    o.line(
        Some(builtin || module_loaded || kallsyms.contains("[overlay]")),
        "overlay",
        overlay,
    );
    for f in [COPY_UP_FN, LOOKUP_FN]
        .into_iter()
        .chain(probe::DATA_COPY_FNS)
    {
        let sym = probe::find_symbol(kallsyms, f);
        let required = f == COPY_UP_FN || f == LOOKUP_FN;
        o.line(
            if required { Some(sym.is_some()) } else { None },
            f,
            sym.map_or("not in /proc/kallsyms".to_string(), |s| {
                format!("kallsyms: {s}")
            }),
        );
    }
}

/// kprobes, fentry, and the attach plan `run` would follow.
fn plan_lines(o: &mut Out, mode: ProbeMode, btf: &Result<KernelBtf>, kallsyms: &str) {
    let kp = probe::kprobes_supported();
    o.line(
        Some(kp),
        "kprobes",
        if kp {
            "supported"
        } else {
            "not supported (CONFIG_KPROBES is not set)"
        },
    );
    let plan = probe::plan(mode, btf.as_ref().ok(), kallsyms);
    let (fentry_ok, fentry) = fentry_can_load(&plan.fentry_btf);
    o.line(Some(fentry_ok), "fentry", fentry);

    let order: Vec<String> = plan.order.iter().map(|s| s.to_string()).collect();
    o.line(None, "attach plan", order.join(" then "));
    for n in &plan.notes {
        o.line(None, "", n);
    }
    if let Some((sym, idx)) = &plan.symbols.data_copy {
        o.line(
            None,
            "data-copy timing",
            format!("{sym} (len is argument {idx})"),
        );
    }
}

/// The verdict, from really attaching, then detaching at once.
fn attach_test(o: &mut Out, root: bool, mode: ProbeMode) -> std::result::Result<(), String> {
    if !root {
        o.line(Some(false), "attach test", "skipped: not root");
        Err(
            "ovltrace doctor cannot tell whether run can trace here without root \
             (run needs root too): rerun it with sudo"
                .to_string(),
        )
    } else {
        match crate::bpf::prepare(mode, 1 << 16, false) {
            Err(e) => {
                o.line(Some(false), "attach test", format!("{e:#}"));
                let fix = if format!("{e:#}").contains("BTF") {
                    "use a kernel built with BTF (CONFIG_DEBUG_INFO_BTF=y)"
                } else {
                    "the attach test line gives the kernel's error"
                };
                Err(cannot(&format!("its programs do not load ({e})"), fix))
            }
            Ok(mut p) => match probe::attach(&mut p.ebpf, &p.plan) {
                Ok(a) => {
                    o.line(
                        Some(true),
                        "attach test",
                        format!("{} probes attached and detached", a.strategy),
                    );
                    for w in &a.warnings {
                        o.line(None, "", w);
                    }
                    map_access_line(o, &p.ebpf);
                    Ok(())
                }
                Err(e) => {
                    for (s, why) in &e.tried {
                        o.line(Some(false), &format!("attach test {s}"), why);
                    }
                    let tried: Vec<String> = e.tried.iter().map(|(s, _)| s.to_string()).collect();
                    let whys: Vec<&str> = e.tried.iter().map(|(_, why)| why.as_str()).collect();
                    Err(cannot(
                        &format!("no probe attaches (tried {})", tried.join(", ")),
                        attach_fix(&whys),
                    ))
                }
            },
        }
    }
}

/// The verdict line when `run` cannot trace: why, and the fix.
fn cannot(why: &str, fix: &str) -> String {
    let one_line: String = why.split_whitespace().collect::<Vec<_>>().join(" ");
    format!("ovltrace run cannot trace overlayfs on this kernel: {one_line}. Fix: {fix}.")
}

/// The fix when no attach strategy works, from the kernel's refusals.
fn attach_fix(whys: &[&str]) -> &'static str {
    let any = |s: &str| whys.iter().any(|w| w.contains(s));
    if any("lockdown")
        && whys
            .iter()
            .all(|w| w.contains("EPERM") || w.contains("lockdown"))
    {
        "boot without lockdown=confidentiality, which forbids both fentry and kprobes"
    } else if any("CONFIG_KPROBES") {
        "use a kernel with CONFIG_KPROBES=y, or one that allows fentry programs (BPF trampolines; not under lockdown)"
    } else {
        "the attach test lines give the kernel's own errors"
    }
}

/// What `run` keeps once attached, and why (privilege.rs).
/// Whether the programs can read overlay's own types: the source layer of
/// each copy-up and the overlay instance it belongs to.
fn overlay_types_line(o: &mut Out, b: &KernelBtf) {
    let mut off = ovltrace_ebpf::Offsets::default();
    match b.overlay_offsets(&mut off) {
        Ok(()) => {
            let layout = if off.lower_layout == ovltrace_ebpf::LAYOUT_INODE {
                "lower stack in OVL_I(inode)->oe (6.5+)"
            } else {
                "lower stack in dentry->d_fsdata (<= 6.4)"
            };
            o.line(
                Some(true),
                "overlay types",
                format!(
                    "{layout}; ovl_layer.idx={} ovl_fs.layers={}: source layers and \
                     overlay identities read in the kernel",
                    off.ovl_layer_idx, off.ovl_fs_layers
                ),
            );
        }
        Err(e) => o.line(
            None,
            "overlay types",
            format!(
                "{e:#}: copy-ups will show no source layer and overlays are told apart \
                 by device number only (load overlay, or use a kernel with \
                 CONFIG_DEBUG_INFO_BTF_MODULES=y)"
            ),
        ),
    }
}

fn privilege_lines(o: &mut Out) {
    let what = "run keeps";
    for k in privilege::base_keep(&[]) {
        o.line(None, what, format!("{}: {}", k.cap, k.why));
    }
    o.line(
        None,
        "",
        "CAP_DAC_OVERRIDE too when --json goes to a directory uid 0 cannot write without it",
    );
    o.line(
        None,
        "",
        "every other capability is dropped from all sets after attaching; no_new_privs is set",
    );
}

/// Whether the maps still work once `run` has dropped CAP_BPF (tested with
/// only the kept capabilities effective, then restored).
fn map_access_line(o: &mut Out, ebpf: &aya::Ebpf) {
    let base = privilege::base_keep(&[]);
    let mut probe = || crate::bpf::read_stats(ebpf).is_ok();
    match privilege::maps_work_with(&base, &mut probe) {
        Ok(true) => o.line(
            Some(true),
            "map access",
            format!(
                "open maps work with only {} effective: run drops CAP_BPF and CAP_SYS_ADMIN",
                privilege::names(&base)
            ),
        ),
        Ok(false) => o.line(
            None,
            "map access",
            "this kernel needs CAP_BPF (or CAP_SYS_ADMIN) for bpf() on open maps: run keeps it",
        ),
        Err(e) => o.line(Some(false), "map access", format!("cannot test: {e:#}")),
    }
}

/// Tries to load (not attach) an fentry program: on ovl_lookup where it has
/// BTF (vmlinux when overlay is built in, the overlay module's BTF object when
/// it is a module), else on vfs_read, which every kernel has.
fn fentry_can_load(fentry_btf: &FentryBtf) -> (bool, String) {
    let target = match fentry_btf {
        FentryBtf::Vmlinux => LOOKUP_FN.to_string(),
        FentryBtf::Module(m) => format!("{OVERLAY_MODULE}:{LOOKUP_FN}, BTF id {}", m.lookup),
        FentryBtf::Missing => "vfs_read".to_string(),
    };
    let result = (|| -> Result<()> {
        let mut p = crate::bpf::prepare(crate::bpf::probe::ProbeMode::Fentry, 1 << 16, false)?;
        let prog: &mut FEntry = p
            .ebpf
            .program_mut("fe_lookup")
            .ok_or_else(|| anyhow::anyhow!("fe_lookup missing"))?
            .try_into()?;
        match fentry_btf {
            FentryBtf::Module(m) => {
                let obj = module_btf::open(OVERLAY_MODULE)?.ok_or_else(|| {
                    anyhow::anyhow!("no kernel BTF object named {OVERLAY_MODULE:?}")
                })?;
                prog.load_from_module(m.lookup, obj.fd.as_fd())?;
            }
            FentryBtf::Vmlinux => prog.load(LOOKUP_FN, &Btf::from_sys_fs()?)?,
            FentryBtf::Missing => prog.load("vfs_read", &Btf::from_sys_fs()?)?,
        }
        Ok(())
    })();
    match result {
        Ok(()) => (true, format!("a program loads (tested on {target})")),
        Err(e) => {
            let msg = format!("{e:#}");
            let why = if msg.contains("os error 1)") {
                format!("refused with EPERM (tested on {target}): fentry/fexit unavailable")
            } else {
                format!("cannot load (tested on {target}): {msg}")
            };
            (false, why)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verdict_names_a_fix_that_fits_the_refusals() {
        // The build machines' kernel: fentry refused, no kprobes.
        let here = [
            "loading fx_copy_up_one for ovl_copy_up_one: the kernel refused the program with EPERM before verifying it: this kernel does not allow fentry/fexit programs (lockdown, or no BPF trampoline support)",
            "attaching kp_copy_up_one to ovl_copy_up_one: this kernel has no kprobe support (CONFIG_KPROBES is not set: /sys/bus/event_source/devices/kprobe and kprobe_events are missing)",
        ];
        assert!(attach_fix(&here).starts_with("use a kernel with CONFIG_KPROBES=y"));
        let locked = [
            "fentry: EPERM (lockdown)",
            "kprobe: EPERM: kernel lockdown forbids kprobes",
        ];
        assert!(attach_fix(&locked).starts_with("boot without lockdown=confidentiality"));
        assert!(attach_fix(&["something else"]).contains("attach test lines"));
        assert_eq!(
            cannot("no probe attaches\n (tried fentry)", "x"),
            "ovltrace run cannot trace overlayfs on this kernel: no probe attaches (tried fentry). Fix: x."
        );
    }
}
