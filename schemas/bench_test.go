package schemas

import (
	"fmt"
	"strings"
	"testing"
)

// benchEvent is a ~400-byte event, typical of the producers.
func benchEvent(i int) string {
	return fmt.Sprintf(`{"external_id":"user-%08d","app_id":"3f8a2c1e-5b7d-4e9f-a1c2-9d8e7f6a5b4c",`+
		`"name":"checkout_started","time":"2024-05-01T10:%02d:00.123Z","_update_existing_only":false,`+
		`"properties":{"cart_id":"c-8f7e6d5c4b3a","items":3,"total":129.95,"currency_hint":"EUR",`+
		`"coupon":null,"tags":["spring","returning"],"source":{"channel":"web","campaign":"spring_sale_2024"},`+
		`"first_purchase":false,"session_seconds":742}}`, i, i%60)
}

func benchAttributes(i int) string {
	return fmt.Sprintf(`{"external_id":"user-%08d","first_name":"Ada","last_name":"Lovelace",`+
		`"email":"ada.lovelace%d@example.com","country":"GB","language":"en","time_zone":"Europe/London",`+
		`"email_subscribe":"opted_in","loyalty_points":{"inc":25},"favourite_colors":{"add":["teal"]},`+
		`"last_login":"2024-05-01T10:00:00Z","plan":"premium","lifetime_value":1234.5,"is_vip":true,`+
		`"signup_source":"mobile_app","referrals":4}`, i, i)
}

func benchPurchase(i int) string {
	return fmt.Sprintf(`{"external_id":"user-%08d","app_id":"3f8a2c1e-5b7d-4e9f-a1c2-9d8e7f6a5b4c",`+
		`"product_id":"sku-000%d-blue-xl","currency":"EUR","price":49.95,"quantity":2,`+
		`"time":"2024-05-01T10:00:00+02:00","properties":{"order_id":"o-5c4b3a2f1e","size":"XL",`+
		`"color":"blue","gift_wrap":false,"discount":0.1,"warehouse":"ams-2","shipping":{"method":"express","days":2}}}`, i, i%10)
}

func benchEnvelope() []byte {
	return []byte(`{"type":"event","id":"01HX3Z9K2P7Q5R8S6T4V","data":` + benchEvent(1) + `}`)
}

// benchBundle is a full /users/track body: n objects, a third of each kind.
func benchBundle(n int) []byte {
	var a, e, p []string
	for i := 0; i < n; i++ {
		switch i % 3 {
		case 0:
			a = append(a, benchAttributes(i))
		case 1:
			e = append(e, benchEvent(i))
		default:
			p = append(p, benchPurchase(i))
		}
	}
	return []byte(`{"attributes":[` + strings.Join(a, ",") + `],"events":[` + strings.Join(e, ",") +
		`],"purchases":[` + strings.Join(p, ",") + `]}`)
}

func benchDecode(b *testing.B, msg []byte) {
	var d Decoder
	out := make([]Record, 0, 128)
	recs, err := d.Decode(msg, out)
	if err != nil {
		b.Fatal(err)
	}
	for _, r := range recs {
		if r.Err != nil {
			b.Fatal(r.Err)
		}
	}
	n := len(recs)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	cpu0 := processCPU()
	for b.Loop() {
		out, _ = d.Decode(msg, out[:0])
	}
	b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "records/s")
	if cpu := processCPU() - cpu0; cpu > 0 {
		b.ReportMetric(float64(b.N*n)/cpu.Seconds(), "records/cpu-s")
	}
	b.ReportMetric(float64(len(msg))/float64(n), "bytes/record")
}

func BenchmarkDecodeEnvelope(b *testing.B) { benchDecode(b, benchEnvelope()) }

func BenchmarkDecodeBundle(b *testing.B) { benchDecode(b, benchBundle(75)) }
