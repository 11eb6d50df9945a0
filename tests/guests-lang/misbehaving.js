// A claim policy that misbehaves as its config says, to show that the
// offline tester runs JS guests as the server does: `print` logs to the
// console and approves; `raise` throws an uncaught exception; `count`
// denies with how many decisions this instance has made, to show whether
// an instance (or its memory) carried over from an earlier decision.
let calls = 0;

export function decide(config, claim) {
  calls += 1;
  const how = JSON.parse(config || '{}').do || '';
  if (how === 'print') {
    console.log(`thinking out loud about ${claim.claimant}`);
    console.error('and to stderr too');
    return { tag: 'approve' };
  }
  if (how === 'raise') {
    throw new Error('misbehaving on purpose');
  }
  if (how === 'count') {
    return { tag: 'deny', val: `call ${calls}` };
  }
  return { tag: 'approve' };
}
