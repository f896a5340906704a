//! How the process allocates: glibc's malloc told to keep freed memory for reuse.
//!
//! Every candle op allocates its output (zero-filled), tens of megabytes per training step. With
//! glibc's defaults, blocks above the mmap threshold come from the kernel and go back to it
//! when freed, so each step pays page faults and the kernel's zeroing of fresh pages again. With
//! a fixed 32 MiB mmap threshold (glibc's largest) and no trimming below 1 GiB, freed tensors'
//! memory is reused: on the example model, bench training went from 19.3-19.7 to 22.6-23.5
//! samples/s for 40 MiB more peak RSS (docs/performance.md). A user who sets glibc's own
//! variables (`MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`, `MALLOC_TOP_PAD_`) keeps them.

/// The settings glibc's `mallopt` receives, in bytes.
pub const MMAP_THRESHOLD: i32 = 32 * 1024 * 1024;
pub const TRIM_THRESHOLD: i32 = 1024 * 1024 * 1024;
pub const TOP_PAD: i32 = 256 * 1024 * 1024;

const USER_VARIABLES: [&str; 3] = [
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_TOP_PAD_",
];

/// Applies the settings above, unless the user set any of glibc's variables; call first thing
/// in `main`. Returns whether it applied them (never outside glibc).
pub fn keep_freed_memory() -> bool {
    if USER_VARIABLES
        .iter()
        .any(|name| std::env::var_os(name).is_some())
    {
        return false;
    }
    apply()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn apply() -> bool {
    // SAFETY: mallopt only changes malloc's parameters; called before any other thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
            && libc::mallopt(libc::M_TOP_PAD, TOP_PAD) == 1
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn apply() -> bool {
    false
}

#[cfg(test)]
mod tests {
    #[test]
    fn glibc_accepts_the_settings() {
        let user_set = super::USER_VARIABLES
            .iter()
            .any(|name| std::env::var_os(name).is_some());
        if cfg!(all(target_os = "linux", target_env = "gnu")) && !user_set {
            assert!(super::keep_freed_memory());
        }
    }
}
