package batcher

// EncodeEndpoint appends the request body of an endpoint other than /users/track for objs,
// which share one Kind and PackKey (schemas.Record.PackKey).
//
// Placeholder encoding: {"<bundle array>":[objects…]}. The endpoint bodies Braze documents
// (docs/braze-rules.md) replace it.
func EncodeEndpoint[T Object](dst []byte, objs []T) []byte {
	dst = append(dst, `{"`...)
	dst = append(dst, objs[0].ObjectKind().Array()...)
	dst = append(dst, `":[`...)
	for i := range objs {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, objs[i].ObjectBytes()...)
	}
	return append(dst, "]}"...)
}
