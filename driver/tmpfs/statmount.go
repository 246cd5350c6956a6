package tmpfs

import (
	"encoding/binary"
	"unsafe"

	"golang.org/x/sys/unix"
)

// statmount(2) (Linux 6.8; sb_source from 6.12) answers for one mount by
// its unique id, where /proc/self/mountinfo lists every mount: on a node
// with thousands of volumes that file is megabytes, read per unpublish.
// x/sys has the syscall number but neither struct, so the offsets of
// include/uapi/linux/mount.h are here.
const (
	statmountSBBasic  = 0x1   // STATMOUNT_SB_BASIC
	statmountMntRoot  = 0x8   // STATMOUNT_MNT_ROOT
	statmountFSType   = 0x20  // STATMOUNT_FS_TYPE
	statmountSBSource = 0x200 // STATMOUNT_SB_SOURCE

	// Offsets in struct statmount; its strings start after the 512-byte
	// fixed part, each [str] field an offset into them.
	smMask     = 8
	smMagic    = 24
	smFSType   = 36
	smMntRoot  = 104
	smSBSource = 124
	smStrings  = 512
	smBufSize  = 4096
)

// mntIDReq is struct mnt_id_req, version 0 (MNT_ID_REQ_SIZE_VER0).
type mntIDReq struct {
	size   uint32
	spare  uint32
	mntID  uint64
	params uint64
}

// uniqueMountID is the 64-bit mount id statmount takes; ok is false on a
// kernel without STATX_MNT_ID_UNIQUE.
func uniqueMountID(fd int) (uint64, bool) {
	var st unix.Statx_t
	if unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_MNT_ID_UNIQUE, &st) != nil ||
		st.Mask&unix.STATX_MNT_ID_UNIQUE == 0 {
		return 0, false
	}
	return st.Mnt_id, true
}

// ownedByStatmount is Owned for fd (its parent open as parent) through
// statmount; ok is false when the kernel cannot answer that way.
func ownedByStatmount(fd, parent int) (owned, ok bool) {
	id, ok := uniqueMountID(fd)
	if !ok {
		return false, false
	}
	pid, ok := uniqueMountID(parent)
	if !ok {
		return false, false
	}
	if id == pid {
		return false, true // a directory inside some mount, not a mount's root
	}
	want := uint64(statmountSBBasic | statmountMntRoot | statmountFSType | statmountSBSource)
	req := mntIDReq{size: uint32(unsafe.Sizeof(mntIDReq{})), mntID: id, params: want}
	buf := make([]byte, smBufSize)
	// x/sys has no wrapper: the kernel reads req and fills buf, both live
	// Go memory for the call (the pointer conversions are in its argument
	// list, as unsafe.Pointer rule 4 requires).
	_, _, errno := unix.Syscall6(unix.SYS_STATMOUNT, uintptr(unsafe.Pointer(&req)), //nolint:gosec // see above
		uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), 0, 0, 0) //nolint:gosec // see above
	if errno != 0 {
		return false, false // ENOSYS, or strings longer than buf (EOVERFLOW)
	}
	le := binary.NativeEndian
	if le.Uint64(buf[smMask:])&want != want {
		return false, false // sb_source needs 6.12
	}
	str := func(off int) string {
		start := smStrings + int(le.Uint32(buf[off:]))
		if start >= len(buf) {
			return ""
		}
		end := start
		for end < len(buf) && buf[end] != 0 {
			end++
		}
		return string(buf[start:end])
	}
	// root "/": the whole file system, not a bind mount of a directory in it.
	return le.Uint64(buf[smMagic:]) == tmpfsMagic && str(smFSType) == "tmpfs" &&
		str(smSBSource) == Source && str(smMntRoot) == "/", true
}
