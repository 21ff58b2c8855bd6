//! Mount -> container/image/layer resolution, one resolver per runtime.
