package driver

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"vaultcsi.dev/driver/driver/attributes"
	"vaultcsi.dev/driver/provider"
)

// codeOf maps an error to the gRPC code kubelet sees. Every error leaving
// the node service goes through here, so none reaches kubelet as Unknown.
func codeOf(err error) codes.Code {
	var fe *attributes.FieldError
	switch {
	case err == nil:
		return codes.OK
	case status.Code(err) != codes.Unknown:
		return status.Code(err)
	case errors.As(err, &fe), errors.Is(err, provider.ErrInvalid):
		return codes.InvalidArgument
	case errors.Is(err, provider.ErrDenied):
		return codes.PermissionDenied
	case errors.Is(err, provider.ErrNotFound):
		return codes.NotFound
	case errors.Is(err, provider.ErrTooLarge), errors.Is(err, provider.ErrBusy):
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
