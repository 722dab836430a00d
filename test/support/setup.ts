// Loaded by mocha before any test file (.mocharc.json "require").
process.env.KDN_TEST = '1';
process.env.XDG_RUNTIME_DIR ??= '/tmp';
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
