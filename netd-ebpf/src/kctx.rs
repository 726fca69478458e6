//! The kernel's `struct sk_buff` behind a TC program's context, for the one field netd needs
//! that `__sk_buff` does not show: `ip_summed` (how the L4 checksum field is to be read, see
//! `nat::set_tuple`).
//!
//! The kfunc `bpf_cast_to_kern_ctx` gives the pointer (the verifier inlines it: a register move,
//! no call at run time). aya has neither kfunc relocations nor CO-RE, so the call is compiled as
//! a call to the made-up helper [`KCTX_MAGIC`], which the loader (`netd::ebpf::kfunc`) rewrites
//! into the kfunc call with the running kernel's BTF id, and the field's place comes from the
//! kernel's BTF at load time in [`NETD_SKB_CSUM_OFF`]/[`NETD_SKB_CSUM_SHIFT`]. When either is
//! missing the loader leaves the offset 0, the call becomes `r0 = 0`, and the verifier drops
//! the branch as dead code (the offset is a constant of the frozen `.rodata`): callers fall back
//! to the checksum helpers.
use aya_ebpf::programs::TcContext;

/// The made-up helper id the loader turns into the kfunc call (ASCII "netd").
pub const KCTX_MAGIC: usize = 0x6e65_7464;

/// Byte offset in `struct sk_buff` of the byte holding `ip_summed`; 0: unknown (no kfunc).
#[unsafe(no_mangle)]
static NETD_SKB_CSUM_OFF: u32 = 0;
/// The bit position of `ip_summed` (2 bits) in that byte.
#[unsafe(no_mangle)]
static NETD_SKB_CSUM_SHIFT: u32 = 0;

pub const CHECKSUM_COMPLETE: u8 = 2;
pub const CHECKSUM_PARTIAL: u8 = 3;

/// Whether the loader made the kfunc call ([`ip_summed`] may be used). A constant of the frozen
/// `.rodata` to the verifier: the branch not taken is never verified.
#[inline(always)]
pub fn available() -> bool {
    // SAFETY: a global of this object, as the loader set it.
    unsafe { core::ptr::read_volatile(&NETD_SKB_CSUM_OFF) != 0 }
}

/// The packet's `ip_summed`. Only where [`available`] (else a dead branch the verifier drops).
#[inline(always)]
pub fn ip_summed(ctx: &TcContext) -> u8 {
    // SAFETY: globals of this object, read as the loader set them.
    let (off, shift) =
        unsafe { (core::ptr::read_volatile(&NETD_SKB_CSUM_OFF), core::ptr::read_volatile(&NETD_SKB_CSUM_SHIFT)) };
    // SAFETY: the loader made this `bpf_cast_to_kern_ctx(ctx)` (`available`), which returns the
    // context's `struct sk_buff`; a one-byte read inside it (the verifier checks the access
    // against the kernel's BTF).
    let b = unsafe {
        let cast: unsafe extern "C" fn(*mut core::ffi::c_void) -> *const u8 = core::mem::transmute(KCTX_MAGIC);
        let skb = cast(ctx.skb.skb.cast());
        core::ptr::read_volatile(skb.add(off as usize))
    };
    (b >> (shift & 7)) & 3
}
