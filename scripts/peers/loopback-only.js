// node -r ./loopback-only.js server.js : every net/http/https/tls server listens on 127.0.0.1
// (kinesis-mock hard-codes 0.0.0.0 and kinesalite's CLI calls listen(port) with no host.)
// Override the address with BIND_HOST.
'use strict';
const net = require('net');
const HOST = process.env.BIND_HOST || '127.0.0.1';
const orig = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  const a0 = args[0];
  if (a0 !== null && typeof a0 === 'object' && !(a0 instanceof net.Server) && ('port' in a0 || 'host' in a0)) {
    args[0] = Object.assign({}, a0, { host: HOST });
  } else if (typeof a0 === 'number' || (typeof a0 === 'string' && /^\d+$/.test(a0))) {
    if (typeof args[1] === 'string' || args[1] === undefined || args[1] === null) args[1] = HOST;
    else args.splice(1, 0, HOST);
  } else if (a0 === undefined || typeof a0 === 'function') {
    args.unshift(0, HOST);
  }
  return orig.apply(this, args);
};
