//! The open-files limit. Every connection is a file descriptor, and
//! distributions still start processes with a soft limit of 1,024 even
//! where the hard limit is far higher; like ejabberd and Prosody, the
//! server lifts its soft limit to the hard one at start.

/// Raises this process's soft open-files limit to its hard limit and
/// returns the limit now in force (0 if it cannot be read).
pub fn raise_open_files() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return raised.rlim_cur;
            }
        }
    }
    limit.rlim_cur
}
