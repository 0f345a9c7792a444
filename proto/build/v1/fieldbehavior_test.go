package buildv1_test

import (
	"slices"
	"testing"

	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// TestFieldBehavior checks that the annotations in build.proto reach the
// descriptor as google.api.field_behavior: the declaration protoc read
// (third_party/googleapis) has the extension number and values of the
// genproto package that the generated code imports.
func TestFieldBehavior(t *testing.T) {
	tests := []struct {
		msg   protoreflect.ProtoMessage
		field protoreflect.Name
		want  annotations.FieldBehavior
	}{
		{&buildv1.BuildInfo{}, "name", annotations.FieldBehavior_IDENTIFIER},
		{&buildv1.BuildInfo{}, "create_time", annotations.FieldBehavior_OUTPUT_ONLY},
		{&buildv1.BuildInfo{}, "state", annotations.FieldBehavior_OUTPUT_ONLY},
		{&buildv1.CreateImageRequest{}, "git_repo", annotations.FieldBehavior_REQUIRED},
		{&buildv1.StartBuildRequest{}, "request", annotations.FieldBehavior_REQUIRED},
		{&buildv1.GetBuildRequest{}, "build_id", annotations.FieldBehavior_REQUIRED},
	}
	for _, tt := range tests {
		md := tt.msg.ProtoReflect().Descriptor()
		fd := md.Fields().ByName(tt.field)
		if fd == nil {
			t.Fatalf("%s has no field %s", md.FullName(), tt.field)
		}
		got, _ := proto.GetExtension(fd.Options(), annotations.E_FieldBehavior).([]annotations.FieldBehavior)
		if !slices.Contains(got, tt.want) {
			t.Errorf("%s.%s: field_behavior = %v, want %v", md.FullName(), tt.field, got, tt.want)
		}
	}
	// A field without the annotation has none.
	fd := (&buildv1.CreateImageRequest{}).ProtoReflect().Descriptor().Fields().ByName("package")
	if got := proto.GetExtension(fd.Options(), annotations.E_FieldBehavior).([]annotations.FieldBehavior); len(got) != 0 {
		t.Errorf("package: field_behavior = %v, want none", got)
	}
}
