//! Attach strategy: fentry/fexit when the overlay functions are in vmlinux BTF
//! (overlay built in), kprobe/kretprobe otherwise. The choice is made by trying,
//! not by guessing from the kernel version: a kernel can have fentry in its
//! config and still refuse it (lockdown, missing trampolines).

use std::fmt;

use anyhow::{anyhow, Context, Result};
use aya::{
    programs::{FEntry, FExit, KProbe},
    Btf, Ebpf,
};

use crate::{btf::KernelBtf, cli::ProbeMode};

/// Kernel functions the tracer hooks.
pub const COPY_UP_FN: &str = "ovl_copy_up_one";
pub const LOOKUP_FN: &str = "ovl_lookup";
/// Data-copy functions by preference: 6.1+ has `ovl_copy_up_file`, older
/// kernels `ovl_copy_up_data` (whose `len` moved from argument 2 to 3 in 5.8).
pub const DATA_COPY_FNS: [&str; 2] = ["ovl_copy_up_file", "ovl_copy_up_data"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    Fentry,
    Kprobe,
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Strategy::Fentry => "fentry",
            Strategy::Kprobe => "kprobe",
        })
    }
}

/// The symbols to attach to, as this kernel names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Symbols {
    pub copy_up: Option<String>,
    pub lookup: Option<String>,
    /// Data-copy function and the index of its `len` argument.
    pub data_copy: Option<(String, u32)>,
}

/// What `run` will try, in order, and why.
#[derive(Debug, Clone)]
pub struct Plan {
    pub order: Vec<Strategy>,
    pub symbols: Symbols,
    /// Human-readable reasons behind the order, shown by `doctor`.
    pub notes: Vec<String>,
}

/// Finds `name` in /proc/kallsyms text, accepting the `.isra.N`/`.constprop.N`
/// clones the compiler makes of static functions (`.part`/`.cold` fragments are
/// not whole functions and are never used).
pub fn find_symbol(kallsyms: &str, name: &str) -> Option<String> {
    let mut clone = None;
    for line in kallsyms.lines() {
        let mut fields = line.split_whitespace();
        let (Some(_addr), Some(kind), Some(sym)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if !matches!(kind, "t" | "T") {
            continue;
        }
        if sym == name {
            return Some(sym.to_string());
        }
        if let Some(rest) = sym.strip_prefix(name) {
            let is_clone = rest.starts_with(".isra.") || rest.starts_with(".constprop.");
            if is_clone && !rest.contains(".part") && !rest.contains(".cold") && clone.is_none() {
                clone = Some(sym.to_string());
            }
        }
    }
    clone
}

pub fn plan(mode: ProbeMode, btf: Option<&KernelBtf>, kallsyms: &str) -> Plan {
    let mut notes = Vec::new();
    let copy_up = find_symbol(kallsyms, COPY_UP_FN);
    let lookup = find_symbol(kallsyms, LOOKUP_FN);
    if copy_up.is_none() || lookup.is_none() {
        notes.push(format!(
            "{COPY_UP_FN}/{LOOKUP_FN} not in /proc/kallsyms: overlay is a module that is not \
             loaded (no overlay mount yet?) — `modprobe overlay` or start a container first"
        ));
    }
    let data_copy = DATA_COPY_FNS.iter().find_map(|f| {
        let sym = find_symbol(kallsyms, f)?;
        match btf.and_then(|b| b.param_index(f, "len")) {
            Some(i) => Some((sym, i as u32)),
            None => {
                notes.push(format!(
                    "{f}: no BTF prototype, so the data-copy time is not measured"
                ));
                None
            }
        }
    });
    let in_vmlinux =
        btf.is_some_and(|b| b.vmlinux_has_func(COPY_UP_FN) && b.vmlinux_has_func(LOOKUP_FN));
    let order = match mode {
        ProbeMode::Fentry => vec![Strategy::Fentry],
        ProbeMode::Kprobe => vec![Strategy::Kprobe],
        ProbeMode::Auto if in_vmlinux => {
            notes.push("overlay is built in (functions in vmlinux BTF): fentry first".into());
            vec![Strategy::Fentry, Strategy::Kprobe]
        }
        ProbeMode::Auto => {
            notes.push(
                "overlay functions are not in vmlinux BTF (overlay is a module): kprobe \
                 (aya 0.14 cannot attach fentry to module functions)"
                    .into(),
            );
            vec![Strategy::Kprobe]
        }
    };
    Plan {
        order,
        symbols: Symbols {
            copy_up,
            lookup,
            data_copy,
        },
        notes,
    }
}

/// The outcome of attaching: which strategy won and what did not work.
#[derive(Debug)]
pub struct Attached {
    pub strategy: Strategy,
    pub data_copy: Option<String>,
    pub warnings: Vec<String>,
}

/// Every strategy failed: each failure with its reason.
#[derive(Debug)]
pub struct AttachFailure {
    pub tried: Vec<(Strategy, String)>,
}

impl fmt::Display for AttachFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "no probe could be attached to the overlayfs functions:")?;
        for (s, why) in &self.tried {
            writeln!(f, "  {s}: {why}")?;
        }
        write!(f, "run `ovltrace doctor` for the details of this kernel")
    }
}

impl std::error::Error for AttachFailure {}

pub fn attach(ebpf: &mut Ebpf, plan: &Plan) -> Result<Attached, AttachFailure> {
    let mut tried = Vec::new();
    for &strategy in &plan.order {
        let result = match strategy {
            Strategy::Fentry => attach_fentry(ebpf, &plan.symbols),
            Strategy::Kprobe => attach_kprobe(ebpf, &plan.symbols),
        };
        match result {
            Ok(attached) => return Ok(attached),
            Err(e) => {
                tried.push((strategy, format!("{e:#}")));
                unload_all(ebpf);
            }
        }
    }
    Err(AttachFailure { tried })
}

fn unload_all(ebpf: &mut Ebpf) {
    use aya::programs::Program;
    for (_, prog) in ebpf.programs_mut() {
        // Unloading also detaches; errors here mean it was never loaded.
        let _ = match prog {
            Program::KProbe(p) => p.unload(),
            Program::FEntry(p) => p.unload(),
            Program::FExit(p) => p.unload(),
            _ => Ok(()),
        };
    }
}

fn required(sym: &Option<String>, name: &str) -> Result<String> {
    sym.clone()
        .ok_or_else(|| anyhow!("{name} is not in /proc/kallsyms (overlay module not loaded?)"))
}

fn kprobe<'a>(ebpf: &'a mut Ebpf, prog: &str) -> Result<&'a mut KProbe> {
    let p = ebpf
        .program_mut(prog)
        .ok_or_else(|| anyhow!("program {prog} missing from the embedded object"))?;
    Ok(p.try_into()?)
}

fn attach_kprobe(ebpf: &mut Ebpf, syms: &Symbols) -> Result<Attached> {
    let copy_up = required(&syms.copy_up, COPY_UP_FN)?;
    let lookup = required(&syms.lookup, LOOKUP_FN)?;
    for (prog, sym) in [
        ("kp_copy_up_one", &copy_up),
        ("krp_copy_up_one", &copy_up),
        ("kp_lookup", &lookup),
        ("krp_lookup", &lookup),
    ] {
        let p = kprobe(ebpf, prog)?;
        p.load().with_context(|| format!("loading {prog}"))?;
        p.attach(sym, 0)
            .map_err(explain_kprobe_error)
            .with_context(|| format!("attaching {prog} to {sym}"))?;
    }
    let mut warnings = Vec::new();
    let mut data_copy = None;
    if let Some((sym, _)) = &syms.data_copy {
        let entry = match syms.data_copy.as_ref().map(|(_, i)| *i) {
            Some(2) => "kp_data_copy_len2",
            _ => "kp_data_copy",
        };
        let r: Result<()> = (|| {
            for prog in [entry, "krp_data_copy"] {
                let p = kprobe(ebpf, prog)?;
                p.load().with_context(|| format!("loading {prog}"))?;
                p.attach(sym, 0)
                    .with_context(|| format!("attaching {prog} to {sym}"))?;
            }
            Ok(())
        })();
        match r {
            Ok(()) => data_copy = Some(sym.clone()),
            Err(e) => warnings.push(format!("data-copy time not measured: {e:#}")),
        }
    }
    Ok(Attached {
        strategy: Strategy::Kprobe,
        data_copy,
        warnings,
    })
}

/// aya reports a missing kprobe PMU as a bare file error; say what it means.
fn explain_kprobe_error(e: aya::programs::ProgramError) -> anyhow::Error {
    if kprobes_supported() {
        anyhow!(e)
    } else {
        log::debug!("kprobe attach: {e:#}");
        anyhow!(
            "this kernel has no kprobe support (CONFIG_KPROBES is not set: \
             /sys/bus/event_source/devices/kprobe and kprobe_events are missing)"
        )
    }
}

/// Whether the kernel offers kprobes through perf (or the legacy tracefs file).
pub fn kprobes_supported() -> bool {
    [
        "/sys/bus/event_source/devices/kprobe",
        "/sys/kernel/tracing/kprobe_events",
        "/sys/kernel/debug/tracing/kprobe_events",
    ]
    .iter()
    .any(|p| std::path::Path::new(p).exists())
}

fn attach_fentry(ebpf: &mut Ebpf, syms: &Symbols) -> Result<Attached> {
    let btf = Btf::from_sys_fs().context("reading vmlinux BTF for fentry")?;
    // fentry needs the plain function name as BTF knows it (no .isra suffix).
    for (prog, func, exit) in [
        ("fe_copy_up_one", COPY_UP_FN, false),
        ("fx_copy_up_one", COPY_UP_FN, true),
        ("fe_lookup", LOOKUP_FN, false),
        ("fx_lookup", LOOKUP_FN, true),
    ] {
        load_attach_tracing(ebpf, &btf, prog, func, exit)?;
    }
    let mut warnings = Vec::new();
    let mut data_copy = None;
    if let Some((sym, 3)) = &syms.data_copy {
        let func = sym.split('.').next().unwrap_or(sym);
        let r = load_attach_tracing(ebpf, &btf, "fe_data_copy", func, false)
            .and_then(|_| load_attach_tracing(ebpf, &btf, "fx_data_copy", func, true));
        match r {
            Ok(()) => data_copy = Some(func.to_string()),
            Err(e) => warnings.push(format!("data-copy time not measured: {e:#}")),
        }
    }
    Ok(Attached {
        strategy: Strategy::Fentry,
        data_copy,
        warnings,
    })
}

fn load_attach_tracing(
    ebpf: &mut Ebpf,
    btf: &Btf,
    prog: &str,
    func: &str,
    exit: bool,
) -> Result<()> {
    let p = ebpf
        .program_mut(prog)
        .ok_or_else(|| anyhow!("program {prog} missing from the embedded object"))?;
    if exit {
        let p: &mut FExit = p.try_into()?;
        p.load(func, btf)
            .map_err(explain_load_error)
            .with_context(|| format!("loading {prog} for {func}"))?;
        p.attach()
            .with_context(|| format!("attaching {prog} to {func}"))?;
    } else {
        let p: &mut FEntry = p.try_into()?;
        p.load(func, btf)
            .map_err(explain_load_error)
            .with_context(|| format!("loading {prog} for {func}"))?;
        p.attach()
            .with_context(|| format!("attaching {prog} to {func}"))?;
    }
    Ok(())
}

fn explain_load_error(e: aya::programs::ProgramError) -> anyhow::Error {
    let msg = format!("{e:#}");
    if msg.contains("os error 1)") {
        log::debug!("fentry load: {msg}");
        anyhow!(
            "the kernel refused the program with EPERM before verifying it: this kernel does \
             not allow fentry/fexit programs (lockdown, or no BPF trampoline support)"
        )
    } else {
        anyhow!(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KALLSYMS: &str = "\
ffffffffc0a01000 t ovl_copy_up_one.isra.0\t[overlay]
ffffffffc0a02000 t ovl_copy_up_one.part.0\t[overlay]
ffffffffc0a03000 T ovl_lookup\t[overlay]
ffffffffc0a03100 t ovl_lookup.cold\t[overlay]
ffffffffc0a04000 t ovl_copy_up_data\t[overlay]
ffffffffc0a05000 d ovl_copy_up_file\t[overlay]
ffffffff81000000 T ovl_lookup_layer
";

    #[test]
    fn finds_exact_and_clone_symbols() {
        assert_eq!(
            find_symbol(KALLSYMS, "ovl_lookup").as_deref(),
            Some("ovl_lookup")
        );
        assert_eq!(
            find_symbol(KALLSYMS, "ovl_copy_up_one").as_deref(),
            Some("ovl_copy_up_one.isra.0")
        );
        // A data symbol of the same name is not a function.
        assert_eq!(find_symbol(KALLSYMS, "ovl_copy_up_file"), None);
        assert_eq!(find_symbol(KALLSYMS, "ovl_copy_up"), None);
        assert_eq!(find_symbol("garbage\n\n1 2\n", "ovl_lookup"), None);
    }

    #[test]
    fn exact_name_beats_clone() {
        let k = "1 t f.constprop.0\n2 t f\n";
        assert_eq!(find_symbol(k, "f").as_deref(), Some("f"));
    }

    #[test]
    fn plan_without_btf() {
        let p = plan(ProbeMode::Auto, None, KALLSYMS);
        assert_eq!(p.order, vec![Strategy::Kprobe]);
        assert_eq!(p.symbols.copy_up.as_deref(), Some("ovl_copy_up_one.isra.0"));
        // Without a prototype the len argument is unknown: no data-copy probe.
        assert_eq!(p.symbols.data_copy, None);
        let p = plan(ProbeMode::Fentry, None, "");
        assert_eq!(p.order, vec![Strategy::Fentry]);
        assert!(p.notes.iter().any(|n| n.contains("not in /proc/kallsyms")));
    }
}
