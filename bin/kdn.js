#!/usr/bin/env node
// The kdn command. Sources are TypeScript run through tsx, so a clone needs no build step.
import module from 'node:module';

// Node 22+ keeps the compiled code of the modules it loads (tsx, commander, ...) between runs, for a faster start;
// it is enabled before tsx is imported so tsx benefits too.
module.enableCompileCache?.();
const { register } = await import('tsx/esm/api');
register();
await import('../kdn/cli/main.ts');
