package driver

// testDriver lets a test call the handlers of every service a Driver built
// (the controller's or the node's is nil in the other mode).
type testDriver struct {
	*Driver
	*shared
	*controllerService
	*nodeService
}

func services(d *Driver) *testDriver {
	return &testDriver{Driver: d, shared: d.shared, controllerService: d.controller, nodeService: d.node}
}
