-- Queue a keyed job of a topic that takes turns between keys behind its key's job in the
-- queue, the key's head (see flow_pop.lua). Put into the scripts whose first line is
-- "-- include: keyed" (see scripts.py); they call these functions with their KEYS entries.
-- Key parameters: queue, seq, keyheads, keyof, keyqueue
-- (the maps as push_flow.lua's KEYS describe them; no function touches any other key).
local KEYED_SHIFT = 17592186044416 -- 2^44, as in push.lua

-- The key's head and its score in the queue; no score when the head left the queue.
local function keyed_head(queue, keyheads, key)
  local head = redis.call('HGET', keyheads, key)
  return head, head and redis.call('ZSCORE', queue, head)
end

-- Job `id`, scored `score`, waits behind the key's head (`head`, scored `head_score`), or
-- takes the head's place if its priority is higher. A key with no head in the queue (no
-- `head_score`) keeps none: `id` waits. The caller has set `id`'s keyof entry.
local function keyed_wait(queue, keyheads, keyof, keyqueue, key, id, score, head, head_score)
  if head_score and math.floor(score / KEYED_SHIFT) < math.floor(tonumber(head_score) / KEYED_SHIFT) then
    redis.call('ZREM', queue, head)
    redis.call('ZADD', keyqueue, 0, string.format('%s\t%014x%s', key, tonumber(head_score), head))
    redis.call('HSET', keyof, head, string.format('%s\t%014x', key, tonumber(head_score)))
    redis.call('ZADD', queue, score, id)
    redis.call('HSET', keyheads, key, id)
  else
    redis.call('ZADD', keyqueue, 0, string.format('%s\t%014x%s', key, score, id))
  end
end

-- Queue job `id` of `key` at `priority`, scored after every job pushed before it: behind
-- the key's head, or in its place if its priority is higher. A key with no head in the
-- queue gets one: its best job, this one or one waiting with a smaller score.
local function keyed_push(queue, seq, keyheads, keyof, keyqueue, key, id, priority)
  local score = (100 - priority) * KEYED_SHIFT + redis.call('INCR', seq)
  redis.call('HSET', keyof, id, string.format('%s\t%014x', key, score))
  local head, head_score = keyed_head(queue, keyheads, key)
  if head_score then
    keyed_wait(queue, keyheads, keyof, keyqueue, key, id, score, head, head_score)
    return
  end
  local first = redis.call('ZRANGEBYLEX', keyqueue, string.format('[%s\t', key), string.format('(%s\n', key),
                           'LIMIT', 0, 1)[1]
  local first_score = first and tonumber(string.sub(first, #key + 2, #key + 15), 16)
  if first_score and first_score < score then
    redis.call('ZREM', keyqueue, first)
    redis.call('ZADD', keyqueue, 0, string.format('%s\t%014x%s', key, score, id))
    redis.call('ZADD', queue, first_score, string.sub(first, #key + 16))
    redis.call('HSET', keyheads, key, string.sub(first, #key + 16))
  else
    redis.call('ZADD', queue, score, id)
    redis.call('HSET', keyheads, key, id)
  end
end
