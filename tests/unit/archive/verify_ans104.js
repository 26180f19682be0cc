// Independent verifier for the ANS-104 unit tests: arbundles and arweave-js (installed with arlocal).
// stdin: {"item": hex} | {"bundle": hex} | {"tx": {...}}; stdout: what the libraries say about it.
const { DataItem, Bundle } = require('arbundles');
const Arweave = require('arweave');

let input = '';
process.stdin.on('data', (d) => { input += d; });
process.stdin.on('end', async () => {
  const req = JSON.parse(input);
  const out = {};
  if (req.item) {
    const buf = Buffer.from(req.item, 'hex');
    out.valid = await DataItem.verify(buf);
    const item = new DataItem(buf);
    out.id = item.id;
    out.tags = item.tags;
    out.data = Buffer.from(item.rawData).toString('hex');
  }
  if (req.bundle) {
    const bundle = new Bundle(Buffer.from(req.bundle, 'hex'));
    out.valid = await bundle.verify();
    out.ids = bundle.getIds();
  }
  if (req.tx) {
    const arweave = Arweave.init({});
    const tx = arweave.transactions.fromRaw(req.tx);
    out.valid = await arweave.transactions.verify(tx);
    if (req.data) {
      const data = Buffer.from(req.data, 'hex');
      const t2 = await arweave.createTransaction({ data, last_tx: req.tx.last_tx, reward: req.tx.reward, owner: req.tx.owner });
      await t2.prepareChunks(data);
      out.data_root = t2.data_root;
    }
  }
  if (req.chunks) {
    // arweave-js's own chunks and proofs of the data, and its verdict on the proofs we made
    const { validatePath } = require('arweave/node/lib/merkle');
    const data = Buffer.from(req.chunks.data, 'hex');
    const arweave = Arweave.init({});
    const tx = await arweave.createTransaction({ data, last_tx: '', reward: '0', owner: req.chunks.owner });
    await tx.prepareChunks(data);
    out.chunks = tx.chunks.chunks.map((_, i) => tx.getChunk(i, data));
    const root = Arweave.utils.b64UrlToBuffer(tx.data_root);
    out.valid = [];
    for (const ours of req.chunks.ours) {
      const got = await validatePath(root, +ours.offset, 0, data.length, Arweave.utils.b64UrlToBuffer(ours.data_path));
      out.valid.push(got ? [got.offset, got.leftBound, got.rightBound, got.chunkSize] : false);
    }
  }
  process.stdout.write(JSON.stringify(out));
});
