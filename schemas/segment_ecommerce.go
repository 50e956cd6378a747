package schemas

// Segment "Order Completed" as Braze's eCommerce recommended event ecommerce.order_placed
// (SegmentOrderEcommerce; docs/segment.md has the mapping table, docs/braze-rules.md §1
// "Purchase object" the event's schema and source).

// orderPlacedName is the exact, case-sensitive event name Braze post-processes.
const orderPlacedName = "ecommerce.order_placed"

// orderFields maps Segment order properties to ecommerce.order_placed properties; the
// order's other properties go to metadata.
var orderFields = [...]struct{ segment, braze string }{
	{"order_id", "order_id"},
	{"cart_id", "cart_id"},
	{"total", "total_value"},
	{"subtotal", "subtotal_value"},
	{"tax", "tax"},
	{"shipping", "shipping"},
	{"discount", "total_discounts"},
	{"source", "source"},
}

// productFields maps Segment product members to the event's products[] members; the
// product's other members go to its metadata.
var productMembers = [...]struct{ segment, braze string }{
	{"name", "product_name"},
	{"image_url", "image_url"},
	{"url", "product_url"},
	{"price", "price"},
}

// orderPlaced writes one ecommerce.order_placed event for the order. products is the
// properties.products member (may be absent or null).
func (sd *segDecode) orderPlaced(products val) error {
	m := &sd.m
	start := len(sd.b)
	if err := sd.identity(); err != nil {
		return err
	}
	sd.beginAt(KindEvent, start)
	sd.b = append(sd.b, `,"name":"`+orderPlacedName+`"`...)
	if err := sd.time(); err != nil {
		return err
	}
	sd.b = append(sd.b, `,"properties":{"currency":`...)
	var cur, total, revenue, value val
	sd.members(m.properties, func(ks, ke int, kesc bool, v val) {
		switch string(sd.key(ks, ke, kesc)) {
		case "currency":
			cur = v
		case "total":
			total = v
		case "revenue":
			revenue = v
		case "value":
			value = v
		}
	})
	switch {
	case sd.isNull(cur):
		def := sd.d.DefaultCurrency
		if def == "" {
			def = "USD"
		}
		sd.b = appendJSONString(sd.b, def)
	case sd.isCurrency(cur):
		c, _ := sd.str(cur)
		sd.b = append(sd.b, '"', upper(c[0]), upper(c[1]), upper(c[2]), '"')
	default:
		return segErr("/properties/currency", "must be a 3-letter ISO 4217 currency code")
	}
	hasSource := false
	for _, f := range orderFields {
		v := sd.member(m.properties, f.segment)
		if f.segment == "total" && sd.isNull(total) {
			// total_value: total, else revenue, else value (Segment's e-commerce spec).
			v = revenue
			if sd.isNull(v) {
				v = value
			}
		}
		if sd.isNull(v) {
			continue
		}
		hasSource = hasSource || f.braze == "source"
		sd.b = append(sd.b, `,"`+f.braze+`":`...)
		sd.nested(v, nil)
	}
	if !hasSource {
		sd.b = append(sd.b, `,"source":"segment"`...)
	}
	sd.b = append(sd.b, `,"products":[`...)
	if products.ok() && sd.buf[products.start] == '[' {
		sd.orderProducts(products)
	}
	sd.b = append(sd.b, ']')
	// metadata: the order's other properties.
	mark := len(sd.b)
	sd.b = append(sd.b, `,"metadata":{`...)
	n := 0
	sd.members(m.properties, func(ks, ke int, kesc bool, v val) {
		k := sd.key(ks, ke, kesc)
		if isOrderField(k) || sd.isNull(v) || !nestedKeyOK(k) {
			return
		}
		if n > 0 {
			sd.b = append(sd.b, ',')
		}
		n++
		sd.b = append(sd.b, '"')
		sd.b = append(sd.b, sd.buf[ks:ke]...)
		sd.b = append(sd.b, '"', ':')
		sd.nested(v, nil)
	})
	if n == 0 {
		sd.b = sd.b[:mark]
	} else {
		sd.b = append(sd.b, '}')
	}
	sd.b = append(sd.b, '}')
	sd.end()
	return nil
}

func isOrderField(k []byte) bool {
	switch string(k) {
	case "products", "currency", "revenue", "value":
		return true
	}
	for _, f := range orderFields {
		if string(k) == f.segment {
			return true
		}
	}
	return false
}

// member returns the value of the member named k of the object at v (or an empty val).
func (sd *segDecode) member(v val, k string) val {
	var out val
	if !v.ok() || sd.buf[v.start] != '{' {
		return out
	}
	sd.members(v, func(ks, ke int, kesc bool, mv val) {
		if string(sd.key(ks, ke, kesc)) == k {
			out = mv
		}
	})
	return out
}

// orderProducts writes the products[] of ecommerce.order_placed: product_id (product_id,
// sku or id), product_name, variant_id (variant, else sku, else the product id), image_url,
// product_url, quantity (default 1), price, and the product's other members as metadata.
// A product that is not an object is left out (counted as dropped).
func (sd *segDecode) orderProducts(products val) {
	s := scanner{buf: sd.buf, pos: products.start + 1, errOff: -1}
	first := true
	s.ws()
	if s.peek() == ']' {
		return
	}
	for {
		s.ws()
		start := s.pos
		s.skip()
		if p := (val{start, s.pos}); sd.buf[p.start] == '{' {
			if !first {
				sd.b = append(sd.b, ',')
			}
			first = false
			sd.orderProduct(p)
		} else {
			sd.dropped++
		}
		s.ws()
		if s.peek() != ',' {
			return
		}
		s.pos++
	}
}

func (sd *segDecode) orderProduct(p val) {
	var pid val
	for _, k := range [...]string{"product_id", "sku", "id"} {
		if c := sd.member(p, k); c.ok() && (sd.nonEmptyStr(c) || isNumberStart(sd.buf[c.start])) {
			pid = c
			break
		}
	}
	sd.b = append(sd.b, '{')
	writeID := func(v val) {
		if sd.buf[v.start] == '"' {
			sd.b = append(sd.b, sd.raw(v)...)
			return
		}
		sd.b = append(sd.b, '"')
		sd.b = append(sd.b, sd.raw(v)...)
		sd.b = append(sd.b, '"')
	}
	sd.b = append(sd.b, `"product_id":`...)
	if pid.ok() {
		writeID(pid)
	} else {
		sd.b = append(sd.b, `""`...)
	}
	variant := sd.member(p, "variant")
	if !sd.nonEmptyStr(variant) {
		variant = sd.member(p, "sku")
	}
	if !sd.nonEmptyStr(variant) && !(variant.ok() && isNumberStart(sd.buf[variant.start])) {
		variant = pid
	}
	if variant.ok() {
		sd.b = append(sd.b, `,"variant_id":`...)
		writeID(variant)
	}
	sd.b = append(sd.b, `,"quantity":`...)
	if q := sd.member(p, "quantity"); !sd.isNull(q) {
		sd.b = append(sd.b, sd.raw(q)...)
	} else {
		sd.b = append(sd.b, '1')
	}
	for _, f := range productMembers {
		if v := sd.member(p, f.segment); !sd.isNull(v) {
			sd.b = append(sd.b, `,"`+f.braze+`":`...)
			sd.nested(v, nil)
		}
	}
	mark := len(sd.b)
	sd.b = append(sd.b, `,"metadata":{`...)
	n := 0
	sd.members(p, func(ks, ke int, kesc bool, v val) {
		switch k := string(sd.key(ks, ke, kesc)); k {
		case "product_id", "id", "variant", "quantity", "name", "image_url", "url", "price":
			return
		default:
			if sd.isNull(v) || !nestedKeyOK([]byte(k)) {
				return
			}
		}
		if n > 0 {
			sd.b = append(sd.b, ',')
		}
		n++
		sd.b = append(sd.b, '"')
		sd.b = append(sd.b, sd.buf[ks:ke]...)
		sd.b = append(sd.b, '"', ':')
		sd.nested(v, nil)
	})
	if n == 0 {
		sd.b = sd.b[:mark]
	} else {
		sd.b = append(sd.b, '}')
	}
	sd.b = append(sd.b, '}')
}
