package pipeline

// newIsolateLayer returns next unchanged until isolation is configured.
func newIsolateLayer(p *Pipeline, next sendLayer) sendLayer { return next }
