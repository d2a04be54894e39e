// Preloaded (node -r) into the cache test suite's server by scripts/conformance.sh: the suite
// calls server.listen(port), which binds every interface; bind 127.0.0.1 only instead.
const net = require('net')
const listen = net.Server.prototype.listen
net.Server.prototype.listen = function (...args) {
  if (args.length === 1 && /^\d+$/.test(String(args[0]))) {
    return listen.call(this, Number(args[0]), '127.0.0.1')
  }
  return listen.apply(this, args)
}
