package driver

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"syscall"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"vaultcsi.dev/driver/driver/attributes"
	"vaultcsi.dev/driver/provider"
)

// codeOf maps every error class to the code kubelet sees; a write that
// found no room is the volume's limit (ResourceExhausted), not Internal.
func TestCodeOf(t *testing.T) {
	pathErr := func(op string, errno syscall.Errno) error {
		return fmt.Errorf("write files: %w", &fs.PathError{Op: op, Path: "/t/..2026/f", Err: errno})
	}
	tests := []struct {
		name string
		err  error
		want codes.Code
	}{
		{"nil", nil, codes.OK},
		{"status passes through", status.Error(codes.NotFound, "x"), codes.NotFound},
		{"field error", &attributes.FieldError{Field: "role", Msg: "required"}, codes.InvalidArgument},
		{"args on a path that does not issue", fmt.Errorf("secrets[1].args: %w", provider.ErrNotIssuing), codes.InvalidArgument},
		{"denied", fmt.Errorf("login: %w", provider.ErrDenied), codes.PermissionDenied},
		{"too large", fmt.Errorf("f: %w", provider.ErrTooLarge), codes.ResourceExhausted},
		{"out of inodes (mkdir)", pathErr("mkdir", syscall.ENOSPC), codes.ResourceExhausted},
		{"out of bytes (write)", pathErr("write", syscall.ENOSPC), codes.ResourceExhausted},
		{"over a quota", pathErr("write", syscall.EDQUOT), codes.ResourceExhausted},
		{"file too large", pathErr("write", syscall.EFBIG), codes.ResourceExhausted},
		{"bare errno", syscall.ENOSPC, codes.ResourceExhausted},
		{"other I/O error", pathErr("write", syscall.EIO), codes.Internal},
		{"permission (not the volume's limit)", pathErr("open", syscall.EACCES), codes.Internal},
		{"deadline", fmt.Errorf("read: %w", context.DeadlineExceeded), codes.DeadlineExceeded},
		{"unavailable", fmt.Errorf("read: %w", provider.ErrUnavailable), codes.Unavailable},
		{"anything else", errors.New("boom"), codes.Internal},
	}
	for _, tt := range tests {
		if got := codeOf(tt.err); got != tt.want {
			t.Errorf("%s: codeOf(%v) = %v, want %v", tt.name, tt.err, got, tt.want)
		}
		if tt.err != nil {
			if got := status.Code(toStatus(tt.err)); got != tt.want {
				t.Errorf("%s: toStatus code %v, want %v", tt.name, got, tt.want)
			}
		}
	}
}
