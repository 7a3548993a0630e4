#!/usr/bin/env node
// Entry point for `npx nlft`: registers the TypeScript loader (tsx) and runs bin/nlft.ts.
import { register } from 'tsx/esm/api';

register();
await import('./nlft.ts');
