import { defineConfig } from "vite";

// The bundle goes into the Python package, which serves it at /map (smartcity_api/routers/map.py);
// a relative outDir is taken from this folder.
export default defineConfig({
  base: "/map/",
  build: {
    outDir: "../smartcity_api/map",
    emptyOutDir: true,
  },
});
