// URLs built by the peers' JavaScript client libraries, signed with their own code, for
// tests/tests/clients.rs: one "LABEL<TAB>PATH" line each. Run with NODE_PATH pointing at the
// node_modules scripts/setup installs (PIXMESH_SDK_MODULES).
const { generateImageUrl } = require('@imgproxy/imgproxy-node');
const { buildSrc } = require('@imagekit/javascript');

const imgproxy = (options, url = { value: 'a.jpg', displayAs: 'plain' }) =>
  generateImageUrl({
    endpoint: 'http://pixmesh/ip/',
    url,
    options,
    key: process.env.IMGPROXY_KEY,
    salt: process.env.IMGPROXY_SALT,
  });
const imagekit = (transformation) =>
  buildSrc({ urlEndpoint: 'http://pixmesh/ik', src: '/a.jpg', transformation });

const urls = {
  'imgproxy fit': imgproxy({ resizing_type: 'fit', width: 300, height: 200 }),
  'imgproxy fill webp': imgproxy({ resizing_type: 'fill', width: 300, height: 200, format: 'webp' }),
  'imgproxy width, base64 source': imgproxy({ width: 300 }, { value: 'a.jpg' }),
  'imgproxy quality png': imgproxy({ width: 200, quality: 70, format: 'png' }),
  'imagekit box': imagekit([{ width: 300, height: 200 }]),
  'imagekit chain': imagekit([{ width: 300, height: 200 }, { rotation: 90 }]),
  'imagekit format': imagekit([{ width: 300, format: 'webp' }]),
};
for (const [label, url] of Object.entries(urls)) {
  console.log(`${label}\t${new URL(url).pathname}${new URL(url).search}`);
}
