#!/usr/bin/env node
// The committed entry npm links as `viommu`: it exists at install time, before the build, so the link is made;
// the code it runs is the built one (the monorepo builds at `prepare`).
import "../dist/main.js";
