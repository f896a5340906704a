//! AMX tiles for the bf16 matrix products (`precision = "bf16"`) on CPUs that have them (Intel
//! Xeon from Sapphire Rapids on): whether this process may use them, and the tile microkernel.
//!
//! AMX multiplies a 16 x 32 bf16 tile of A by a 32 x 16 bf16 tile of B into a 16 x 16 f32 tile
//! of C in one instruction (`tdpbf16ps`), eight to sixteen times the work of an AVX512-BF16
//! `vdpbf16ps` per cycle. The operands are the packs of [`crate::model::bf16`] unchanged (A as
//! rows of pairs, B as panels of `[pair][64 columns]`), with k padded to whole tiles of 16 pairs
//! and A's rows to whole blocks of 32. One microkernel call keeps a 32 x 32 block of C in four
//! tile registers over the whole of k, so C is read and written once per product.
//!
//! The arithmetic: bf16 operands rounded to nearest (ties to even) by the packing, products and
//! sums in f32, inputs and outputs below f32's normal range flushed to zero. The tiles sum the
//! products of one `tdpbf16ps` in their own order, so results differ from the AVX512-BF16
//! kernel's in the last bits (both are deterministic: a run repeats bit for bit on the same
//! unit). Which unit computed a run's products is kept in its provenance; `bertlab reproduce`
//! uses the same unit again where this CPU has it, and `BERTLAB_BF16_PRODUCTS=avx512` turns
//! the tiles off for a whole process.
//!
//! Written by hand: neither candle nor any crate on crates.io offers AMX bf16 products, and the
//! tile instructions have no stable Rust intrinsics, so the kernel is inline assembly.

use std::arch::asm;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

/// Rows of C (and of packed A) one microkernel call covers: two tiles of 16.
pub const BLOCK_ROWS: usize = 32;
/// Columns of C one microkernel call covers: two tiles of 16.
pub const BLOCK_COLUMNS: usize = 32;
/// Pairs of k one tile multiplication consumes: A tiles are 16 rows x 16 pairs.
pub const TILE_PAIRS: usize = 16;
/// Bytes between pair-rows of a packed B panel (`[pair][64 columns]` of u32).
pub const B_STRIDE: usize = 64 * 4;

/// The environment variable that chooses the unit of the bf16 products for a whole process:
/// `avx512` keeps them off the tiles, `amx` (or unset) uses the tiles where the CPU has them.
pub const UNIT_VARIABLE: &str = "BERTLAB_BF16_PRODUCTS";

/// Set by [`avoid_tiles`]: the products of this process stay on AVX512-BF16.
static AVOIDED: AtomicBool = AtomicBool::new(false);

/// Whether the CPU has AMX-TILE and AMX-BF16, the operating system saves tile state, and it let
/// this process use the tiles (Linux asks processes to request them: `arch_prctl`).
pub fn hardware_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(detect)
}

/// Whether the bf16 products run on the tiles now: the hardware has them, the environment does
/// not say `avx512`, and nothing called [`avoid_tiles`].
pub fn enabled() -> bool {
    static ALLOWED_BY_ENVIRONMENT: OnceLock<bool> = OnceLock::new();
    let allowed = *ALLOWED_BY_ENVIRONMENT.get_or_init(|| {
        !std::env::var(UNIT_VARIABLE).is_ok_and(|value| value.eq_ignore_ascii_case("avx512"))
    });
    allowed && !AVOIDED.load(Ordering::Relaxed) && hardware_available()
}

/// Keeps (`true`) or no longer keeps (`false`) this process's bf16 products off the tiles, as
/// `bertlab reproduce` does for a run whose products ran on AVX512-BF16.
pub fn avoid_tiles(avoid: bool) {
    AVOIDED.store(avoid, Ordering::Relaxed);
}

fn detect() -> bool {
    // CPUID leaf 7 (sub-leaf 0), EDX: bit 22 AMX-BF16, bit 24 AMX-TILE.
    #[allow(unused_unsafe)]
    // SAFETY: CPUID exists on every x86-64 CPU; leaf 7 answers zeros where it is not defined.
    let (leaf_7, leaf_1) = unsafe {
        (
            std::arch::x86_64::__cpuid_count(7, 0),
            std::arch::x86_64::__cpuid(1),
        )
    };
    let has_tiles = leaf_7.edx & (1 << 22) != 0 && leaf_7.edx & (1 << 24) != 0;
    // CPUID leaf 1, ECX bit 27: the OS enabled XSAVE, so XGETBV may be used.
    if !has_tiles || leaf_1.ecx & (1 << 27) == 0 {
        return false;
    }
    let (low, _high): (u32, u32);
    // SAFETY: XGETBV with ECX = 0 reads XCR0; OSXSAVE (checked above) makes it legal.
    unsafe {
        asm!("xgetbv", in("ecx") 0u32, out("eax") low, out("edx") _high, options(nomem, nostack));
    }
    // XCR0 bits 17 (XTILECFG) and 18 (XTILEDATA): the OS saves the tile state.
    if low & (1 << 17) == 0 || low & (1 << 18) == 0 {
        return false;
    }
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: arch_prctl(ARCH_REQ_XCOMP_PERM, XTILEDATA) only asks for a permission; it touches
    // no memory of ours. It is granted for the whole process.
    let answer = unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        )
    };
    answer == 0
}

/// The tile configuration: palette 1, tiles 0-7 of 16 rows of 64 bytes.
#[repr(C, align(64))]
struct TileConfiguration([u8; 64]);

const CONFIGURATION: TileConfiguration = {
    let mut bytes = [0u8; 64];
    bytes[0] = 1;
    let mut tile = 0;
    while tile < 8 {
        bytes[16 + 2 * tile] = 64;
        bytes[48 + tile] = 16;
        tile += 1;
    }
    TileConfiguration(bytes)
};

/// Loads the tile configuration on this thread; [`release`] must follow on the same thread.
///
/// # Safety
/// [`hardware_available`] must have returned true.
pub unsafe fn configure() {
    // SAFETY: the caller checked the tiles exist and are permitted; the configuration is valid.
    unsafe {
        asm!("ldtilecfg [{}]", in(reg) &CONFIGURATION as *const TileConfiguration, options(nostack, readonly))
    }
}

/// Returns this thread's tiles to their initial state (so context switches stay cheap).
///
/// # Safety
/// [`configure`] must have run on this thread.
pub unsafe fn release() {
    // SAFETY: as the caller promises.
    unsafe { asm!("tilerelease", options(nostack, nomem)) }
}

/// How a microkernel call starts its 32 x 32 block of C.
#[derive(Clone, Copy)]
pub enum BlockStart {
    Zero,
    /// From f32 values: rows 0-15 at `top`, rows 16-31 at `bottom`, `stride` bytes between rows
    /// (0 repeats one row: a bias).
    Load {
        top: *const f32,
        bottom: *const f32,
        stride: usize,
    },
}

/// One 32 x 32 block of C over `tiles` tiles of 16 pairs: `a` points at row 0's first pair of
/// packed A (rows `a_stride` bytes apart; rows 16-31 follow row 15), `b` at the first pair-row of
/// the block's 32 columns in a packed B panel (pair-rows [`B_STRIDE`] bytes apart). The block goes
/// to `out` (rows `out_stride` bytes apart) after starting as `start` says.
///
/// # Safety
/// [`configure`] must have run on this thread; the pointers must cover 32 rows of `16 * tiles`
/// pairs of A, `16 * tiles` pair-rows of 32 columns of B, the start values and the output block.
#[allow(clippy::too_many_arguments)]
#[inline]
pub unsafe fn block(
    tiles: usize,
    a: *const u32,
    a_stride: usize,
    b: *const u32,
    start: BlockStart,
    out: *mut f32,
    out_stride: usize,
) {
    debug_assert!(tiles > 0);
    let out_bottom = out.wrapping_byte_add(16 * out_stride);
    let a_bottom = a.wrapping_byte_add(16 * a_stride);
    // The loop over k and the stores, shared by both starts.
    macro_rules! product {
        ($($start:literal,)* ; $($operands:tt)*) => {
            asm!(
                $($start,)*
                "2:",
                "tileloadd tmm4, [{a} + {a_stride}*1]",
                "tileloadd tmm5, [{a_bottom} + {a_stride}*1]",
                "tileloadd tmm6, [{b} + {b_stride}*1]",
                "tileloadd tmm7, [{b} + {b_stride}*1 + 64]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                "add {a}, 64",
                "add {a_bottom}, 64",
                "add {b}, {b_step}",
                "dec {tiles}",
                "jnz 2b",
                "tilestored [{out} + {out_stride}*1], tmm0",
                "tilestored [{out} + {out_stride}*1 + 64], tmm1",
                "tilestored [{out_bottom} + {out_stride}*1], tmm2",
                "tilestored [{out_bottom} + {out_stride}*1 + 64], tmm3",
                a = inout(reg) a => _,
                a_bottom = inout(reg) a_bottom => _,
                a_stride = in(reg) a_stride,
                b = inout(reg) b => _,
                b_stride = in(reg) B_STRIDE,
                b_step = const TILE_PAIRS * B_STRIDE,
                tiles = inout(reg) tiles => _,
                out = in(reg) out,
                out_bottom = in(reg) out_bottom,
                out_stride = in(reg) out_stride,
                $($operands)*
                options(nostack)
            )
        };
    }
    // SAFETY (both): the caller guarantees the configuration and that every pointer covers what
    // the tiles read and write.
    match start {
        BlockStart::Zero => unsafe {
            product!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                ;
            )
        },
        BlockStart::Load {
            top,
            bottom,
            stride,
        } => unsafe {
            product!(
                "tileloadd tmm0, [{top} + {start_stride}*1]",
                "tileloadd tmm1, [{top} + {start_stride}*1 + 64]",
                "tileloadd tmm2, [{bottom} + {start_stride}*1]",
                "tileloadd tmm3, [{bottom} + {start_stride}*1 + 64]",
                ;
                top = in(reg) top,
                bottom = in(reg) bottom,
                start_stride = in(reg) stride,
            )
        },
    }
}
