package driver

import (
	"context"
	"errors"
	"syscall"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"vaultcsi.dev/driver/driver/attributes"
	"vaultcsi.dev/driver/provider"
)

// codeOf maps an error to the gRPC code kubelet sees. Every error leaving
// the node service goes through here, so none reaches kubelet as Unknown.
func codeOf(err error) codes.Code {
	var fe *attributes.FieldError
	var ie *attributes.IdentityError
	switch {
	case err == nil:
		return codes.OK
	case status.Code(err) != codes.Unknown:
		return status.Code(err)
	case errors.As(err, &ie):
		return codes.PermissionDenied
	case errors.As(err, &fe), errors.Is(err, provider.ErrInvalid), errors.Is(err, provider.ErrNotIssuing):
		return codes.InvalidArgument
	case errors.Is(err, provider.ErrDenied):
		return codes.PermissionDenied
	case errors.Is(err, provider.ErrNotFound):
		return codes.NotFound
	case errors.Is(err, provider.ErrTooLarge), errors.Is(err, provider.ErrBusy), isOutOfSpace(err):
		return codes.ResourceExhausted
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	case errors.Is(err, provider.ErrUnavailable):
		return codes.Unavailable
	}
	return codes.Internal
}

// toStatus turns an error into a gRPC status error with its mapped code.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok && status.Code(err) != codes.Unknown {
		return err
	}
	return status.Error(codeOf(err), err.Error())
}

// isOutOfSpace reports a write that failed for lack of room: bytes or
// inodes of the volume's tmpfs, the state dir or the kubelet dir (ENOSPC),
// a quota (EDQUOT) or a file size limit (EFBIG). These are the volume's
// limits, not a driver fault: ResourceExhausted, as for --max-volume-bytes.
func isOutOfSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) || errors.Is(err, syscall.EFBIG)
}
