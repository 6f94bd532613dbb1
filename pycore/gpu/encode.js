// Records dispatches into a compute pass: the one piece of JavaScript in the GPU runtime
// (pycore/gpu/browser.py loads this body with `new Function`). Called once per submitted
// batch or replayed plan instead of three Pyodide-to-JS calls per dispatch, which cost
// more than the dispatches themselves (see `stemtone bench runtime --browser`).
//   pipelines[i], groups[i]: the dispatch's pipeline and bind group
//   offsets[i], counts[i]:   its dynamic uniform offset, and 1 if it has one (else 0)
//   grids[3 i .. 3 i + 2]:   its workgroup counts
for (let i = 0; i < pipelines.length; i++) {
  pass.setPipeline(pipelines[i]);
  pass.setBindGroup(0, groups[i], offsets, i, counts[i]);
  pass.dispatchWorkgroups(grids[3 * i], grids[3 * i + 1], grids[3 * i + 2]);
}
