#include "server/reflection_v1.h"

#include <deque>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/descriptor.pb.h"
#include "proto/grpc/health/v1/health.pb.h"

namespace mpt {
namespace {

using google::protobuf::DescriptorPool;
using google::protobuf::FileDescriptor;
using grpc::reflection::v1::ServerReflectionRequest;
using grpc::reflection::v1::ServerReflectionResponse;

void SetError(grpc::StatusCode code, std::string message, ServerReflectionResponse* response) {
  response->mutable_error_response()->set_error_code(static_cast<int32_t>(code));
  response->mutable_error_response()->set_error_message(std::move(message));
}

// `file` and, breadth first, every file it imports (each once).
void AddFileAndDependencies(const FileDescriptor* file, ServerReflectionResponse* response) {
  std::set<const FileDescriptor*> seen{file};
  std::deque<const FileDescriptor*> queue{file};
  auto* out = response->mutable_file_descriptor_response();
  while (!queue.empty()) {
    const FileDescriptor* f = queue.front();
    queue.pop_front();
    google::protobuf::FileDescriptorProto proto;
    f->CopyTo(&proto);
    proto.SerializeToString(out->add_file_descriptor_proto());
    for (int i = 0; i < f->dependency_count(); ++i) {
      if (seen.insert(f->dependency(i)).second) queue.push_back(f->dependency(i));
    }
  }
}

}  // namespace

ServerReflectionV1::ServerReflectionV1(std::vector<std::string> services)
    : services_(std::move(services)) {
  // Links the health messages, whose static initialiser adds
  // grpc/health/v1/health.proto to the generated pool.
  (void)grpc::health::v1::HealthCheckRequest::descriptor();
}

ServerReflectionResponse ServerReflectionV1::Answer(const ServerReflectionRequest& request) const {
  const DescriptorPool* pool = DescriptorPool::generated_pool();
  ServerReflectionResponse response;
  response.set_valid_host(request.host());
  *response.mutable_original_request() = request;
  switch (request.message_request_case()) {
    case ServerReflectionRequest::kListServices:
      for (const std::string& name : services_) {
        response.mutable_list_services_response()->add_service()->set_name(name);
      }
      break;
    case ServerReflectionRequest::kFileByFilename:
      if (const FileDescriptor* f = pool->FindFileByName(request.file_by_filename())) {
        AddFileAndDependencies(f, &response);
      } else {
        SetError(grpc::StatusCode::NOT_FOUND,
                 absl::StrCat("file not found: ", request.file_by_filename()), &response);
      }
      break;
    case ServerReflectionRequest::kFileContainingSymbol:
      if (const FileDescriptor* f =
              pool->FindFileContainingSymbol(request.file_containing_symbol())) {
        AddFileAndDependencies(f, &response);
      } else {
        SetError(grpc::StatusCode::NOT_FOUND,
                 absl::StrCat("symbol not found: ", request.file_containing_symbol()), &response);
      }
      break;
    case ServerReflectionRequest::kFileContainingExtension: {
      const auto& ext = request.file_containing_extension();
      const google::protobuf::Descriptor* type = pool->FindMessageTypeByName(ext.containing_type());
      const google::protobuf::FieldDescriptor* field =
          type == nullptr ? nullptr : pool->FindExtensionByNumber(type, ext.extension_number());
      if (field != nullptr) {
        AddFileAndDependencies(field->file(), &response);
      } else if (type == nullptr) {
        SetError(grpc::StatusCode::NOT_FOUND,
                 absl::StrCat("type not found: ", ext.containing_type()), &response);
      } else {
        SetError(grpc::StatusCode::NOT_FOUND,
                 absl::StrCat("extension not found: ", ext.containing_type(), " number ",
                              ext.extension_number()),
                 &response);
      }
      break;
    }
    case ServerReflectionRequest::kAllExtensionNumbersOfType: {
      const google::protobuf::Descriptor* type =
          pool->FindMessageTypeByName(request.all_extension_numbers_of_type());
      if (type == nullptr) {
        SetError(grpc::StatusCode::NOT_FOUND,
                 absl::StrCat("type not found: ", request.all_extension_numbers_of_type()),
                 &response);
        break;
      }
      std::vector<const google::protobuf::FieldDescriptor*> extensions;
      pool->FindAllExtensions(type, &extensions);
      auto* numbers = response.mutable_all_extension_numbers_response();
      numbers->set_base_type_name(type->full_name());
      for (const auto* e : extensions) numbers->add_extension_number(e->number());
      break;
    }
    case ServerReflectionRequest::MESSAGE_REQUEST_NOT_SET:
      SetError(grpc::StatusCode::UNIMPLEMENTED, "the request sets no message_request", &response);
      break;
  }
  return response;
}

grpc::Status ServerReflectionV1::ServerReflectionInfo(
    grpc::ServerContext* context,
    grpc::ServerReaderWriter<ServerReflectionResponse, ServerReflectionRequest>* stream) {
  ServerReflectionRequest request;
  while (stream->Read(&request)) {
    if (!stream->Write(Answer(request))) break;
  }
  if (context->IsCancelled()) return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
  return grpc::Status::OK;
}

}  // namespace mpt
