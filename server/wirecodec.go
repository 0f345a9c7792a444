package server

import (
	"container/list"
	"strconv"
	"sync"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// eventCodec is gRPC's proto codec, except that an event of a build's log
// is encoded once for every stream that sends it: a build with a thousand
// watchers would otherwise marshal each of its events a thousand times
// (most of the server's CPU in a fan-out profile). An event is named by its
// build id and seq, and the log never changes an event it holds, so the
// bytes of one are the bytes of all. The encodings are kept in a bounded
// cache, least recently sent first out.
type eventCodec struct {
	base  encoding.CodecV2
	cache *wireCache
}

// newEventCodec returns the codec, with a cache of at most maxBytes.
func newEventCodec(maxBytes int) *eventCodec {
	return &eventCodec{base: encoding.GetCodecV2("proto"), cache: newWireCache(maxBytes)}
}

// Name implements encoding.CodecV2: it is the proto codec.
func (c *eventCodec) Name() string { return c.base.Name() }

// Unmarshal implements encoding.CodecV2.
func (c *eventCodec) Unmarshal(data mem.BufferSlice, v any) error { return c.base.Unmarshal(data, v) }

// Marshal implements encoding.CodecV2.
func (c *eventCodec) Marshal(v any) (mem.BufferSlice, error) {
	e, ok := v.(*buildv1.BuildEvent)
	if !ok || e.GetBuildId() == "" || e.GetSeq() == 0 {
		return c.base.Marshal(v)
	}
	key := e.GetBuildId() + "/" + strconv.FormatUint(e.GetSeq(), 10)
	b, ok := c.cache.get(key)
	if !ok {
		var err error
		if b, err = proto.Marshal(e); err != nil {
			return nil, err
		}
		c.cache.put(key, b)
	}
	// gRPC frees the buffers it is given; a SliceBuffer's free does
	// nothing, so the cached bytes stay for the next stream.
	return mem.BufferSlice{mem.SliceBuffer(b)}, nil
}

// wireCache is a byte-bounded LRU of encoded events.
type wireCache struct {
	max int

	mu    sync.Mutex
	size  int
	items map[string]*list.Element
	lru   *list.List // of *wireItem, most recently used first
}

type wireItem struct {
	key  string
	data []byte
}

func newWireCache(maxBytes int) *wireCache {
	return &wireCache{max: maxBytes, items: map[string]*list.Element{}, lru: list.New()}
}

func (c *wireCache) get(key string) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[key]
	if !ok {
		return nil, false
	}
	c.lru.MoveToFront(el)
	return el.Value.(*wireItem).data, true
}

func (c *wireCache) put(key string, data []byte) {
	if len(data) > c.max {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.items[key]; ok {
		return
	}
	c.items[key] = c.lru.PushFront(&wireItem{key: key, data: data})
	c.size += len(data)
	for c.size > c.max {
		last := c.lru.Back()
		it := last.Value.(*wireItem)
		c.lru.Remove(last)
		delete(c.items, it.key)
		c.size -= len(it.data)
	}
}
