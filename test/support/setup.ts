// Loaded by mocha before any test file (.mocharc.json "require").
process.env.KDN_TEST = '1';
process.env.XDG_RUNTIME_DIR ??= '/tmp';
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
// Tests of the edge path query the same chunks again and check the edge tier that served them; the engine's hot tier
// would serve them instead. Tests of the hot tier turn it on for their own server.
process.env.KDN_HOT_TIER ??= '0';
