// A claim policy that misbehaves as its config says, to show that the
// offline tester runs JS guests as the server does: `print` logs to the
// console and approves; `raise` throws an uncaught exception.
export function decide(config, claim) {
  const how = JSON.parse(config || '{}').do || '';
  if (how === 'print') {
    console.log(`thinking out loud about ${claim.claimant}`);
    console.error('and to stderr too');
    return { tag: 'approve' };
  }
  if (how === 'raise') {
    throw new Error('misbehaving on purpose');
  }
  return { tag: 'approve' };
}
