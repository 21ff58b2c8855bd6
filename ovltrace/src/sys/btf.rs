//! Struct offsets and function signatures from the running kernel's BTF.
//!
//! Rust eBPF has no CO-RE relocations, so every field the programs read is
//! located here at start-up and handed to them through the `OFFSETS` global.
//! `struct dentry`, `qstr`, `super_block` and `inode` live in vmlinux; the
//! overlay functions' prototypes live in vmlinux when overlay is built in and
//! in the split BTF /sys/kernel/btf/overlay when it is a module.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use btf_rs::{Btf, Type};
use ovltrace_ebpf::{Offsets, INLINE_NAME};

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";
pub const OVERLAY_BTF: &str = "/sys/kernel/btf/overlay";

/// vmlinux BTF plus, when overlay is a module, its split BTF.
pub struct KernelBtf {
    pub vmlinux: Btf,
    /// Split BTF of the overlay module (absent when built in or not loaded).
    pub overlay: Option<Btf>,
    pub vmlinux_path: PathBuf,
}

impl KernelBtf {
    pub fn load() -> Result<Self> {
        Self::load_from(Path::new(VMLINUX_BTF), Path::new(OVERLAY_BTF))
    }

    pub fn load_from(vmlinux: &Path, overlay: &Path) -> Result<Self> {
        if !vmlinux.exists() {
            bail!(
                "{} does not exist: this kernel was built without CONFIG_DEBUG_INFO_BTF, \
                 so struct offsets cannot be found",
                vmlinux.display()
            );
        }
        let base = Btf::from_file(vmlinux)
            .map_err(|e| anyhow!("{e}"))
            .with_context(|| format!("parsing {}", vmlinux.display()))?;
        let overlay = if overlay.exists() {
            Some(
                Btf::from_split_file(overlay, &base)
                    .map_err(|e| anyhow!("{e}"))
                    .with_context(|| format!("parsing {}", overlay.display()))?,
            )
        } else {
            None
        };
        Ok(Self {
            vmlinux: base,
            overlay,
            vmlinux_path: vmlinux.to_path_buf(),
        })
    }

    /// Offsets of every field the programs read. The overlay module's own
    /// types are optional: without them (see [`overlay_offsets`]) events carry
    /// no source layer and overlays are told apart by device only.
    ///
    /// [`overlay_offsets`]: Self::overlay_offsets
    pub fn offsets(&self) -> Result<Offsets> {
        let mut o = self.vfs_offsets()?;
        match self.overlay_offsets(&mut o) {
            Ok(()) => {}
            Err(e) => {
                log::warn!("source layers and overlay identities unavailable: {e:#}");
                o.lower_layout = 0;
            }
        }
        Ok(o)
    }

    /// vmlinux types: dentry, qstr, super_block, inode, vfsmount.
    fn vfs_offsets(&self) -> Result<Offsets> {
        let b = &self.vmlinux;
        Ok(Offsets {
            dentry_d_parent: member_offset(b, "dentry", "d_parent")?,
            dentry_d_name: member_offset(b, "dentry", "d_name")?,
            dentry_d_inode: member_offset(b, "dentry", "d_inode")?,
            dentry_d_sb: member_offset(b, "dentry", "d_sb")?,
            dentry_d_fsdata: member_offset(b, "dentry", "d_fsdata")?,
            qstr_name: member_offset(b, "qstr", "name")?,
            sb_s_dev: member_offset(b, "super_block", "s_dev")?,
            sb_s_fs_info: member_offset(b, "super_block", "s_fs_info")?,
            inode_i_mode: member_offset(b, "inode", "i_mode")?,
            inode_i_size: member_offset(b, "inode", "i_size")?,
            inode_i_ino: member_offset(b, "inode", "i_ino")?,
            vfsmount_mnt_root: member_offset(b, "vfsmount", "mnt_root")?,
            vfsmount_mnt_sb: member_offset(b, "vfsmount", "mnt_sb")?,
            task_nsproxy: member_offset(b, "task_struct", "nsproxy")?,
            nsproxy_mnt_ns: member_offset(b, "nsproxy", "mnt_ns")?,
            mnt_ns_inum: member_offset(b, "mnt_namespace", "ns")?
                + member_offset(b, "ns_common", "inum")?,
            dentry_d_iname: inline_name_offset(b),
            ..Offsets::default()
        })
    }

    /// The overlay module's types (vmlinux when overlay is built in): where
    /// a dentry's lower stack hangs and how layers are described.
    pub fn overlay_offsets(&self, o: &mut Offsets) -> Result<()> {
        let b = self.overlay.as_ref().unwrap_or(&self.vmlinux);
        o.ovl_fs_layers = member_offset(b, "ovl_fs", "layers")?;
        o.ovl_layer_mnt = member_offset(b, "ovl_layer", "mnt")?;
        o.ovl_layer_idx = member_offset(b, "ovl_layer", "idx")?;
        o.ovl_layer_fsid = member_offset(b, "ovl_layer", "fsid")?;
        o.ovl_path_layer = member_offset(b, "ovl_path", "layer")?;
        o.ovl_path_size = struct_size(b, "ovl_path")?;
        // 6.5 moved the lower stack from the dentry (d_fsdata) to the
        // overlay inode (`oe`) and renamed its fields with `__`.
        if let Ok(oe) = member_offset(b, "ovl_inode", "oe") {
            o.ovl_inode_oe = oe;
            o.ovl_inode_vfs_inode = member_offset(b, "ovl_inode", "vfs_inode")?;
            o.ovl_entry_numlower = member_offset(b, "ovl_entry", "__numlower")?;
            o.ovl_entry_lowerstack = member_offset(b, "ovl_entry", "__lowerstack")?;
            o.lower_layout = ovltrace_ebpf::LAYOUT_INODE;
        } else {
            o.ovl_entry_numlower = member_offset(b, "ovl_entry", "numlower")?;
            o.ovl_entry_lowerstack = member_offset(b, "ovl_entry", "lowerstack")?;
            o.lower_layout = ovltrace_ebpf::LAYOUT_DENTRY;
        }
        Ok(())
    }

    /// Whether `func` is described in vmlinux BTF (overlay built in: fentry
    /// resolves it by name; otherwise see `module_btf`).
    pub fn vmlinux_has_func(&self, func: &str) -> bool {
        find_func_proto(&self.vmlinux, func).is_some()
    }

    /// Index of the parameter called `param` of `func`, looked up in the overlay
    /// module's BTF first, then vmlinux.
    pub fn param_index(&self, func: &str, param: &str) -> Option<usize> {
        [self.overlay.as_ref(), Some(&self.vmlinux)]
            .into_iter()
            .flatten()
            .find_map(|btf| {
                let proto = find_func_proto(btf, func)?;
                proto
                    .parameters
                    .iter()
                    .position(|p| btf.resolve_name(p).is_ok_and(|n| n == param))
            })
    }
}

fn find_func_proto(btf: &Btf, func: &str) -> Option<btf_rs::FuncProto> {
    let types = btf.resolve_types_by_name(func).ok()?;
    types.into_iter().find_map(|t| match t {
        Type::Func(f) => match btf.resolve_chained_type(&f).ok()? {
            Type::FuncProto(p) => Some(p),
            _ => None,
        },
        _ => None,
    })
}

/// Byte offset of `member` in `struct strukt`, looking through anonymous
/// structs and unions (e.g. `qstr` keeps `len` inside an anonymous union).
pub fn member_offset(btf: &Btf, strukt: &str, member: &str) -> Result<u32> {
    let types = btf
        .resolve_types_by_name(strukt)
        .map_err(|e| anyhow!("struct {strukt} not found in BTF: {e}"))?;
    for t in types {
        if let Type::Struct(s) = t {
            if let Some(bits) = find_member(btf, &s, member, 0) {
                if bits % 8 != 0 {
                    bail!("{strukt}.{member} is a bitfield");
                }
                return Ok(bits / 8);
            }
        }
    }
    bail!("struct {strukt} has no member {member} in this kernel's BTF")
}

/// `sizeof(struct strukt)`.
pub fn struct_size(btf: &Btf, strukt: &str) -> Result<u32> {
    let types = btf
        .resolve_types_by_name(strukt)
        .map_err(|e| anyhow!("struct {strukt} not found in BTF: {e}"))?;
    types
        .into_iter()
        .find_map(|t| match t {
            Type::Struct(s) if s.size() > 0 => Some(s.size() as u32),
            _ => None,
        })
        .ok_or_else(|| anyhow!("struct {strukt} has no definition in this kernel's BTF"))
}

/// Offset of the name a dentry keeps inline (`d_iname`; `d_shortname`, a
/// union, from 6.14) when it is word-aligned and holds at least
/// [`INLINE_NAME`] bytes; 0 otherwise (the programs then read every name
/// with the string helper).
fn inline_name_offset(btf: &Btf) -> u32 {
    let Ok(types) = btf.resolve_types_by_name("dentry") else {
        return 0;
    };
    for t in types {
        let Type::Struct(s) = t else { continue };
        for m in &s.members {
            let name = btf.resolve_name(m).unwrap_or_default();
            if name != "d_iname" && name != "d_shortname" {
                continue;
            }
            let size = match btf.resolve_chained_type(m).map(|t| skip_modifiers(btf, t)) {
                // An array of bytes.
                Ok(Type::Array(a)) => a.len(),
                Ok(Type::Union(u)) => u.size(),
                _ => 0,
            };
            if size >= INLINE_NAME && m.bit_offset() % 64 == 0 {
                return m.bit_offset() / 8;
            }
        }
    }
    0
}

fn find_member(btf: &Btf, s: &btf_rs::Struct, member: &str, base_bits: u32) -> Option<u32> {
    for m in &s.members {
        let name = btf.resolve_name(m).unwrap_or_default();
        let bits = base_bits + m.bit_offset();
        if name == member {
            return Some(bits);
        }
        if name.is_empty() {
            // Anonymous struct/union: search inside it.
            let inner = btf.resolve_chained_type(m).ok()?;
            if let Type::Struct(inner) | Type::Union(inner) = skip_modifiers(btf, inner) {
                if let Some(found) = find_member(btf, &inner, member, bits) {
                    return Some(found);
                }
            }
        }
    }
    None
}

fn skip_modifiers(btf: &Btf, mut t: Type) -> Type {
    for _ in 0..16 {
        let next = match &t {
            Type::Typedef(x) => btf.resolve_chained_type(x),
            Type::Const(x) | Type::Volatile(x) | Type::Restrict(x) => btf.resolve_chained_type(x),
            _ => return t,
        };
        match next {
            Ok(n) => t = n,
            Err(_) => return t,
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The build machines' own kernel has BTF; the offsets must be sane there.
    #[test]
    fn offsets_from_this_kernel() {
        let Ok(btf) = KernelBtf::load() else {
            eprintln!("SKIPPED: offsets_from_this_kernel: {VMLINUX_BTF} unreadable");
            return;
        };
        let o = btf.offsets().unwrap();
        // struct qstr { union { struct { u32 hash; u32 len; }; u64 hash_len; }; const char *name; }
        assert_eq!(o.qstr_name, 8);
        assert_eq!(member_offset(&btf.vmlinux, "qstr", "len").unwrap(), 4);
        // Fields are distinct and inside their structs.
        assert!(o.dentry_d_parent != o.dentry_d_inode);
        assert!(o.dentry_d_sb > o.dentry_d_inode);
        assert_eq!(
            o.inode_i_mode, 0,
            "i_mode is the first field of struct inode"
        );
        assert!(member_offset(&btf.vmlinux, "dentry", "no_such_field").is_err());
        // d_iname (d_shortname from 6.14) follows d_name and is word-aligned.
        assert!(o.dentry_d_iname > o.dentry_d_name, "{o:?}");
        assert_eq!(o.dentry_d_iname % 8, 0);
        assert_eq!(struct_size(&btf.vmlinux, "qstr").unwrap(), 16);
        assert!(o.vfsmount_mnt_sb > o.vfsmount_mnt_root);
        assert!(member_offset(&btf.vmlinux, "no_such_struct_xyz", "x").is_err());
    }

    #[test]
    fn missing_btf_is_a_clear_error() {
        let err = KernelBtf::load_from(Path::new("/nonexistent/vmlinux"), Path::new("/x"))
            .err()
            .unwrap();
        assert!(err.to_string().contains("CONFIG_DEBUG_INFO_BTF"), "{err}");
    }
}
